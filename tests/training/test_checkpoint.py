"""Checkpoint loading and saving: upstream formats, safety, and one-line actionable errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from fomm_deploy.runtime.core.config import config_from_dict, resolve_config
from fomm_deploy.training.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from fomm_deploy.training.model import build_models

REPO = Path(__file__).resolve().parents[2]


def shrink(cfg, num_kp=None):
    """A small variant of a config that keeps its structure (jacobian maps, sn, use_kp, scales)."""
    data = cfg.to_dict()
    mp = data["model_params"]
    if num_kp is not None:
        mp["common_params"]["num_kp"] = num_kp
    mp["kp_detector_params"].update(block_expansion=4, max_features=16)
    mp["generator_params"].update(block_expansion=4, max_features=16)
    mp["generator_params"]["dense_motion_params"].update(block_expansion=4, max_features=16)
    mp["discriminator_params"].update(block_expansion=4, max_features=16)
    return config_from_dict(data, name="")


def upstream_style_file(path: Path, models, *, legacy=True, prefix="", epoch=7, discriminator=True):
    """Write a checkpoint the way upstream's Logger.save_cpk does (optionally in the torch 1.0 legacy format)."""
    def sd(m):
        return {prefix + k: v for k, v in m.state_dict().items()}

    data = {"generator": sd(models.generator)}
    if discriminator:
        data["discriminator"] = sd(models.discriminator)
    data["kp_detector"] = sd(models.kp_detector)
    params = list(models.generator.parameters())
    data["optimizer_generator"] = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999)).state_dict()
    data["epoch"] = epoch
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    return path


def _perturbed(models):
    with torch.no_grad():
        for m in models:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    return models


def _assert_same_weights(a, b):
    for part in ("kp_detector", "generator"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


def test_golden_checkpoint_is_legacy_format_and_loads_strictly(golden_dir):
    path = golden_dir / "checkpoint.pth.tar"
    assert not zipfile.is_zipfile(path)  # torch 1.0 era, non-zip
    loaded = load_checkpoint(path, resolve_config("tiny-test"))
    assert loaded.epoch == 99
    assert not loaded.models.kp_detector.training and not loaded.models.generator.training


@pytest.mark.parametrize("name", ["vox-256", "vox-adv-256", "taichi-256", "taichi-adv-256", "bair-256",
                                  "fashion-256", "mgif-256", "nemo-256", "tiny-test"])
def test_legacy_upstream_layout_loads_strictly_with_every_config(tmp_path, name):
    cfg = shrink(resolve_config(name))
    source = _perturbed(build_models(cfg, discriminator=True))
    path = upstream_style_file(tmp_path / "cpk.pth.tar", source)
    loaded = load_checkpoint(path, cfg, discriminator=True)
    _assert_same_weights(source, loaded.models)
    assert loaded.epoch == 7


def test_cuda_tagged_storages_load_on_a_cpu_machine(tmp_path):
    cfg = shrink(resolve_config("vox-256"))
    source = _perturbed(build_models(cfg, discriminator=True))
    path = upstream_style_file(tmp_path / "cpk.pth.tar", source)
    # Rewrite every storage location 'cpu' -> 'cuda:0', as in files saved from GPU training by torch 1.0.
    blob = path.read_bytes()
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert blob.count(cpu) >= 1
    path.write_bytes(blob.replace(cpu, cuda))
    if not torch.cuda.is_available():  # proves the file really is GPU-tagged
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    _assert_same_weights(source, load_checkpoint(path, cfg).models)


@pytest.mark.parametrize("legacy", [True, False])
def test_module_prefixes_are_stripped(tmp_path, legacy):
    cfg = shrink(resolve_config("tiny-test"))
    source = _perturbed(build_models(cfg, discriminator=True))
    path = upstream_style_file(tmp_path / "cpk.pth.tar", source, legacy=legacy, prefix="module.")
    _assert_same_weights(source, load_checkpoint(path, cfg).models)


def test_missing_num_batches_tracked_is_accepted(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    source = build_models(cfg)
    data = {"generator": {k: v for k, v in source.generator.state_dict().items() if "num_batches" not in k},
            "kp_detector": {k: v for k, v in source.kp_detector.state_dict().items() if "num_batches" not in k}}
    torch.save(data, tmp_path / "old.pth.tar")
    _assert_same_weights(source, load_checkpoint(tmp_path / "old.pth.tar", cfg).models)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_checkpoint_that_carries_code_is_refused_and_not_run(tmp_path, golden_dir):
    marker = tmp_path / "marker.txt"
    data = torch.load(golden_dir / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    data["epoch"] = _RunsCode(marker)
    path = tmp_path / "evil.pth.tar"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*references \S*exec\b.*could run code"):
        load_checkpoint(path, resolve_config("tiny-test"))
    assert not marker.exists()


def test_wrong_num_kp_names_the_parameter_and_says_no_bundled_config_fits(tmp_path):
    cfg15 = shrink(resolve_config("tiny-test"), num_kp=15)
    path = upstream_style_file(tmp_path / "kp15.pth.tar", build_models(cfg15, discriminator=True))
    cfg10 = dataclasses.replace(shrink(resolve_config("tiny-test")), name="small-10")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, cfg10)
    msg = str(info.value)
    assert "\n" not in msg
    assert "15 keypoints" in msg and "'small-10'" in msg
    assert "kp_detector.kp.weight: checkpoint (15, 7, 7, 7) vs config (10, 7, 7, 7)" in msg
    assert "No bundled config fits" in msg and "num_kp: 15, not 10" in msg
    assert msg.count("vs config") <= 3 and "more)" in msg


def test_mismatched_config_suggests_the_bundled_config_that_fits(golden_dir):
    with pytest.raises(CheckpointError, match=r"does not fit config 'vox-256'.*Use --config tiny-test"):
        load_checkpoint(golden_dir / "checkpoint.pth.tar", resolve_config("vox-256"))


def test_upstream_size_checkpoint_suggests_vox(tmp_path):
    # A full-size checkpoint checked against the tiny config: the suggestion lists the upstream configs.
    models = build_models(resolve_config("vox-256"))
    path = tmp_path / "vox.pth.tar"
    torch.save({"generator": models.generator.state_dict(), "kp_detector": models.kp_detector.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"Use --config (bair|fashion|nemo|taichi|vox)[-\w]* \(also fits: .*vox-256"):
        load_checkpoint(path, resolve_config("tiny-test"))


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>", "HTML/XML page"),
    (b"hello, this is not a checkpoint at all", "not a PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "vox-cpk.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_checkpoint(tmp_path, golden_dir, fraction):
    blob = (golden_dir / "checkpoint.pth.tar").read_bytes()
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_truncated_zip_checkpoint(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    path = upstream_style_file(tmp_path / "z.pth.tar", build_models(cfg, discriminator=True), legacy=False)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        read_checkpoint(path)


def test_wrong_layouts(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="holds a Tensor, not an FOMM checkpoint"):
        read_checkpoint(tmp_path / "tensor.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"lacks 'kp_detector' and 'generator' \(found: state_dict\)"):
        read_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pth.tar")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


def test_save_writes_upstream_layout_that_loads_back(tmp_path):
    cfg = shrink(resolve_config("vox-adv-256"))
    models = _perturbed(build_models(cfg, discriminator=True))
    opt = torch.optim.Adam(models.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    path = save_checkpoint(tmp_path / "sub" / "00000003-checkpoint.pth.tar", generator=models.generator,
                           kp_detector=models.kp_detector, discriminator=models.discriminator,
                           optimizers={"optimizer_generator": opt}, epoch=3)
    raw = read_checkpoint(path)
    assert list(raw) == ["generator", "discriminator", "kp_detector", "optimizer_generator", "epoch"]
    loaded = load_checkpoint(path, cfg, discriminator=True)
    _assert_same_weights(models, loaded.models)
    assert loaded.epoch == 3
    assert os.listdir(path.parent) == [path.name]  # no temporary file left


def test_interrupted_save_leaves_no_file(tmp_path):
    models = build_models(shrink(resolve_config("tiny-test")))
    target = tmp_path / "cpk.pth.tar"
    with pytest.raises(Exception):
        # A lambda cannot be pickled: torch.save fails halfway through writing.
        save_checkpoint(target, generator=models.generator, kp_detector=models.kp_detector,
                        extra={"broken": lambda: None})
    assert list(tmp_path.iterdir()) == []


def _inspect(*args):
    return subprocess.run([sys.executable, "-m", "fomm_deploy.training.inspect_checkpoint", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_inspect_cli_loads_golden(golden_dir):
    res = _inspect("--ckpt", str(golden_dir / "checkpoint.pth.tar"), "--config", "tiny-test")
    assert res.returncode == 0, res.stderr
    assert "kp_detector" in res.stdout and "118,080" in res.stdout and "253,431" in res.stdout
    assert "prediction (1, 3, 128, 128)" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--ckpt", "does-not-exist.pth.tar"], "checkpoint not found"),
    (["--ckpt", "{golden}", "--config", "vox-256"], "Use --config tiny-test"),
    (["--ckpt", "{golden}", "--config", "vox256"], "Did you mean 'vox-256'"),
    (["--ckpt", "pyproject.toml"], "not a PyTorch checkpoint"),
])
def test_inspect_cli_user_errors_are_one_line(golden_dir, args, message):
    args = [a.format(golden=golden_dir / "checkpoint.pth.tar") for a in args]
    res = _inspect(*args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr


def test_random_checkpoint_command_writes_one_that_loads(tmp_path):
    """The documented way to a random-weight checkpoint (the docs' vox-random.pth.tar; tiny-test here for speed):
    it loads strictly into the config's networks, the same seed gives the same weights, and an existing file
    needs --force."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "fomm_deploy.training.random_checkpoint", *args],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    res = run("--config", "tiny-test", "--out", "tiny random.pth.tar")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("wrote tiny random.pth.tar: tiny-test networks") and res.stderr == "", res.stderr
    first = load_checkpoint(tmp_path / "tiny random.pth.tar", resolve_config("tiny-test"))
    res = run("--config", "tiny-test", "--out", "tiny random.pth.tar")
    assert res.returncode == 1 and res.stderr.splitlines() == [
        "Error: --out tiny random.pth.tar already exists; pass --force to replace it"], res.stderr
    assert run("--config", "tiny-test", "--out", "again.pth.tar").returncode == 0
    assert run("--config", "tiny-test", "--out", "other.pth.tar", "--seed", "1").returncode == 0
    again = load_checkpoint(tmp_path / "again.pth.tar", resolve_config("tiny-test"))
    other = load_checkpoint(tmp_path / "other.pth.tar", resolve_config("tiny-test"))
    for a, b, c in zip(first.models.generator.state_dict().values(), again.models.generator.state_dict().values(),
                       other.models.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(first.models.generator.parameters(),
                                                       other.models.generator.parameters()))


def test_nested_module_prefixes_are_stripped(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    source = _perturbed(build_models(cfg, discriminator=True))
    path = upstream_style_file(tmp_path / "cpk.pth.tar", source, prefix="module.module.")
    _assert_same_weights(source, load_checkpoint(path, cfg).models)


def test_resuming_adversarial_training_needs_a_discriminator(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    path = upstream_style_file(tmp_path / "cpk.pth.tar", build_models(cfg), discriminator=False)
    with pytest.raises(CheckpointError, match="has no 'discriminator' entry; it cannot resume adversarial"):
        load_checkpoint(path, cfg, discriminator=True)


@pytest.mark.parametrize("change, message", [
    ("extra", r"kp_detector\.extra\.weight: in the checkpoint but not in the model built from the config"),
    ("missing", r"kp_detector\.kp\.bias: required by the config but missing from the checkpoint"),
])
def test_extra_and_missing_keys_are_named(tmp_path, change, message):
    cfg = shrink(resolve_config("tiny-test"))
    models = build_models(cfg)
    kp = dict(models.kp_detector.state_dict())
    if change == "extra":
        kp["extra.weight"] = torch.zeros(3)
    else:
        del kp["kp.bias"]
    torch.save({"kp_detector": kp, "generator": models.generator.state_dict()}, tmp_path / "cpk.pth.tar")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "cpk.pth.tar", cfg)


def test_mismatch_message_shows_three_problems_and_counts_the_rest(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    models = build_models(cfg)
    kp = dict(models.kp_detector.state_dict())
    for key in ("kp.weight", "kp.bias", "jacobian.weight", "jacobian.bias", "down.weight"):
        del kp[key]
    torch.save({"kp_detector": kp, "generator": models.generator.state_dict()}, tmp_path / "cpk.pth.tar")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "cpk.pth.tar", cfg)
    assert str(info.value).count("required by the config but missing") == 3
    assert "(and 2 more)" in str(info.value)


def test_an_epoch_that_is_not_an_int_is_dropped(tmp_path):
    cfg = shrink(resolve_config("tiny-test"))
    models = build_models(cfg)
    torch.save({"kp_detector": models.kp_detector.state_dict(), "generator": models.generator.state_dict(),
                "epoch": torch.tensor(3)}, tmp_path / "cpk.pth.tar")
    assert load_checkpoint(tmp_path / "cpk.pth.tar", cfg).epoch is None


def _flip_bytes_in_largest_tensor(path: Path) -> str:
    """Change 4 bytes in the middle of the largest tensor of a zip-format checkpoint (what a bad download or disk
    does); the name of the member they are in."""
    import struct

    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[member.header_offset + 26:member.header_offset + 30])
    start = member.header_offset + 30 + name_len + extra_len + member.file_size // 2
    data[start:start + 4] = bytes(b ^ 0x5A for b in data[start:start + 4])
    path.write_bytes(bytes(data))
    return member.filename.split("/", 1)[1]


def test_a_checkpoint_with_changed_bytes_is_named_damaged(tmp_path):
    """torch.load does not check the CRCs of a zip checkpoint: changed tensor bytes loaded, and exported, without
    a word."""
    ckpt = tmp_path / "synthetic-faces.pth.tar"
    ckpt.write_bytes((REPO / "checkpoints" / "synthetic-faces.pth.tar").read_bytes())
    read_checkpoint(ckpt)
    member = _flip_bytes_in_largest_tensor(ckpt)
    torch.load(ckpt, map_location="cpu", weights_only=True)  # torch itself loads it
    with pytest.raises(CheckpointError, match=f"synthetic-faces.pth.tar is damaged: the bytes of its part {member} "
                                              "do not match their checksum"):
        read_checkpoint(ckpt)
    res = subprocess.run([str(Path(sys.executable).parent / "fomm-export"), "--ckpt", str(ckpt), "--config",
                          "synthetic-faces", "--out", "out"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.startswith(f"Error: {ckpt} is damaged"), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, legacy):
    """A run that diverged writes NaN weights, and a legacy-format file (no checksums) with damaged bytes can
    hold them: the model's every output would be NaN."""
    raw = read_checkpoint(REPO / "checkpoints" / "synthetic-faces.pth.tar")
    name = next(k for k, v in raw["kp_detector"].items() if v.is_floating_point() and v.numel() > 4)
    raw["kp_detector"][name].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 1.0])
    ckpt = tmp_path / "diverged.pth.tar"
    torch.save(raw, ckpt, **({"_use_new_zipfile_serialization": False} if legacy else {}))
    with pytest.raises(CheckpointError, match=f"diverged.pth.tar has 2 weights that are not finite \\(NaN or "
                                              f"infinity\\) in kp_detector {name}: the training that wrote it "
                                              "diverged, or the file is damaged"):
        load_checkpoint(ckpt, resolve_config("synthetic-faces"))


def test_warm_start_copies_what_matches_and_starts_the_rest_new(tmp_path):
    """python -m fomm_deploy.training.warm_start: a config without the generator's down blocks, started from a
    trained checkpoint of one with them. Tensors of the same name and shape are the checkpoint's, the others
    the new config's seeded initialisation; --only narrows the copy; the file loads strictly and carries no
    epoch or optimizer state, so fomm-train starts it at epoch 0."""
    old_cfg = shrink(resolve_config("tiny-test"))
    trained = _perturbed(build_models(old_cfg, discriminator=True))
    src = upstream_style_file(tmp_path / "trained.pth.tar", trained, legacy=False, prefix="module.")
    data = old_cfg.to_dict()
    data["model_params"]["generator_params"]["num_down_blocks"] = 0
    new_yaml = tmp_path / "no down blocks.yaml"
    new_yaml.write_text(yaml.safe_dump(data))
    new_cfg = resolve_config(str(new_yaml))

    def run(*args, ckpt=src):
        return subprocess.run([sys.executable, "-m", "fomm_deploy.training.warm_start", "--ckpt", str(ckpt),
                               "--config", str(new_yaml), *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    res = run("--out", "warm.pth.tar")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.startswith("wrote warm.pth.tar: tensors copied from ")
    assert "kp_detector 65 of 65, generator 73 of 145, discriminator 26 of 26" in res.stdout
    raw = read_checkpoint(tmp_path / "warm.pth.tar")
    assert sorted(raw) == ["discriminator", "generator", "kp_detector"]
    warm = load_checkpoint(tmp_path / "warm.pth.tar", new_cfg, discriminator=True).models
    torch.manual_seed(0)
    fresh = build_models(new_cfg, discriminator=True)
    copied = new = 0
    for part in ("kp_detector", "generator", "discriminator"):
        old_state = getattr(trained, part).state_dict()
        for k, v in getattr(warm, part).state_dict().items():
            if k in old_state and old_state[k].shape == v.shape:
                assert torch.equal(v, old_state[k]), (part, k)
                copied += 1
            else:
                assert torch.equal(v, getattr(fresh, part).state_dict()[k]), (part, k)
                new += 1
    assert copied and new  # the down blocks' absence changes the encoder's and decoder's shapes

    res = run("--out", "dense motion only.pth.tar", "--only", "generator.dense_motion_network")
    assert res.returncode == 0, res.stderr
    only = load_checkpoint(tmp_path / "dense motion only.pth.tar", new_cfg, discriminator=True).models
    for k, v in only.generator.state_dict().items():
        expected = trained if k.startswith("dense_motion_network.") else fresh
        assert torch.equal(v, expected.generator.state_dict()[k]), k
    assert all(torch.equal(a, b) for a, b in zip(only.kp_detector.state_dict().values(),
                                                  fresh.kp_detector.state_dict().values()))

    for args, message in ((("--out", "x.pth.tar", "--only", "decoder"), "--only decoder: a prefix starts with one"),
                          (("--out", "x.pth.tar", "--only", "generator.decoder"), "check the --only prefixes"),
                          (("--out", str(src)), "is the --ckpt input"),
                          (("--out", str(src), "--force"), "is the --ckpt input"),
                          (("--out", "warm.pth.tar"), "already exists; pass --force")):
        res = run(*args)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    torch.save({"generator": {"encoder.weight": torch.ones(2)}, "kp_detector": {"head.weight": torch.ones(2)}},
               tmp_path / "other model.pth.tar")
    other = run("--out", "other.pth.tar", ckpt="other model.pth.tar")
    assert other.returncode == 1 and "no tensor of other model.pth.tar" in other.stderr, other.stderr
    assert "another model" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "other.pth.tar").exists()
