"""Training: losses, the equivariance transform, data layouts, resume, distributed run, evaluation."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from fomm_deploy.runtime.core.config import config_from_dict, resolve_config
from fomm_deploy.runtime.core.errors import FommError, Interrupted
from fomm_deploy.training.checkpoint import load_checkpoint, read_checkpoint
from fomm_deploy.training.data import Augmenter, DatasetError, FramesDataset, read_video
from fomm_deploy.training.losses import GeneratorFullModel, Transform, Vgg19
from fomm_deploy.training.model import build_models
from fomm_deploy.training.synthetic import write_dataset
from fomm_deploy.training.train import TrainOptions, reconstruction, train

REPO = Path(__file__).resolve().parents[2]


def tiny_train_config(**train):
    data = resolve_config("tiny-test").to_dict()
    data["train_params"].update({**dict(perceptual_backbone="pixel", batch_size=2, num_repeats=1, num_epochs=2,
                                        checkpoint_freq=1, scales=[1, 0.5]), **train})
    return config_from_dict(data, name="tiny-train")


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, videos=5, size=128, seed=3, frames=8, progress=False)
    return root


def test_losses_decrease_on_a_fixed_batch(golden_inputs):
    torch.manual_seed(0)
    cfg = tiny_train_config()
    models = build_models(cfg)
    full = GeneratorFullModel(models.kp_detector.train(), models.generator.train(), None, cfg, None)
    params = list(models.kp_detector.parameters()) + list(models.generator.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))
    batch = {"source": torch.from_numpy(golden_inputs["driving"][:2]),
             "driving": torch.from_numpy(golden_inputs["driving"][2:4])}
    history = []
    for _ in range(12):
        losses, _ = full(batch, generator=torch.Generator().manual_seed(5))  # the same transform every step
        history.append({k: float(v.detach()) for k, v in losses.items()})
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad()
    assert set(history[0]) == {"perceptual", "equivariance_value", "equivariance_jacobian"}
    for key in history[0]:
        assert history[-1][key] < history[0][key], (key, history[0][key], history[-1][key])


def test_transform_jacobian_matches_the_analytic_one():
    torch.manual_seed(0)
    t = Transform(3, sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    pts = (torch.rand(3, 7, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    t.theta, t.control_params = t.theta.double(), t.control_params.double()
    t.control_points = t.control_points.double()
    auto = t.jacobian(pts).detach()
    # d/dz [A z + b + sum_k w_k r_k^2 log(r_k + eps)], r_k = |z - c_k|_1:
    # d r_k / dz = sign(z - c_k); d(r^2 log(r + eps))/dr = 2 r log(r + eps) + r^2 / (r + eps)
    diff = pts.detach().unsqueeze(2) - t.control_points.unsqueeze(1)  # (B, N, P, 2)
    r = diff.abs().sum(-1, keepdim=True)
    dbasis = 2 * r * torch.log(r + 1e-6) + r**2 / (r + 1e-6)
    tps = (t.control_params.squeeze(1).unsqueeze(1).unsqueeze(-1) * dbasis * torch.sign(diff)).sum(2)  # (B, N, 2)
    analytic = t.theta[:, None, :, :2].expand(3, 7, 2, 2).clone()
    analytic[..., 0, :] += tps
    analytic[..., 1, :] += tps
    torch.testing.assert_close(auto, analytic, atol=1e-9, rtol=1e-7)
    affine_only = Transform(2, 0.05, 0, 0)
    torch.testing.assert_close(affine_only.jacobian(torch.rand(2, 4, 2)).detach(),
                               affine_only.theta[:, None, :, :2].expand(2, 4, 2, 2))


def test_transform_of_identity_keeps_the_frame():
    t = Transform(1, 0.0, 0.0, 0)
    frame = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(t.transform_frame(frame, align_corners=True), frame, atol=1e-6, rtol=0)


def test_video_layouts(tmp_path, synthetic_data):
    mp4 = sorted((synthetic_data / "train").glob("*.mp4"))[0]
    frames = read_video(mp4, (128, 128, 3))
    assert frames.shape == (8, 128, 128, 3) and frames.dtype == np.uint8
    folder = tmp_path / "clip.mp4"  # vox-style: a folder named like a video
    folder.mkdir()
    for i, f in enumerate(frames[:4]):
        cv2.imwrite(str(folder / f"{i:07d}.png"), f[..., ::-1])
    np.testing.assert_array_equal(read_video(folder, (128, 128, 3)), frames[:4])
    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.concatenate(list(frames[:3]), axis=1)[..., ::-1])
    np.testing.assert_array_equal(read_video(strip, (128, 128, 3)), frames[:3])
    gif = tmp_path / "clip.gif"
    from fomm_deploy.runtime.media.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(mp4), str(gif)], check=True)
    assert read_video(gif, (64, 64, 3)).shape[1:] == (64, 64, 3)
    with pytest.raises(DatasetError, match="a strip must be 100 px high and a multiple of 100 px wide, got 384x128"):
        read_video(strip, (100, 100, 3))


def test_broken_videos_are_skipped_once_and_counted(tmp_path, synthetic_data):
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for p in sorted((synthetic_data / "train").glob("*.mp4"))[:2]:
        (root / "train" / p.name).write_bytes(p.read_bytes())
    (root / "train" / "broken.mp4").write_text("not a video")
    one = root / "train" / "short.mp4"
    frame = np.zeros((128, 128, 3), np.uint8)
    from fomm_deploy.runtime.media.video import VideoWriter

    with VideoWriter(one, 25, (128, 128)) as w:
        w.write(frame)
    (root / "train" / "empty").mkdir()
    mixed = root / "train" / "mixed sizes"  # a frame folder whose frames differ in size
    mixed.mkdir()
    cv2.imwrite(str(mixed / "0000.png"), np.zeros((128, 128, 3), np.uint8))
    cv2.imwrite(str(mixed / "0001.png"), np.zeros((96, 128, 3), np.uint8))
    messages = []
    ds = FramesDataset(root, (128, 128, 3), is_train=True, log=messages.append)
    assert len(ds.videos) == 2
    assert sorted(p.name for p in ds.skipped) == ["broken.mp4", "empty", "mixed sizes", "short.mp4"]
    assert len(messages) == 4 and any("at least 2 are needed" in m for m in messages)
    assert any("frames differ in size: 0000.png is 128x128, 0001.png is 128x96" in m for m in messages)
    item = ds[0]
    assert item["source"].shape == (3, 128, 128) and item["driving"].dtype == torch.float32


def test_a_clip_cut_short_is_skipped_by_name_without_ffmpeg_noise(tmp_path, synthetic_data):
    """A phone or web clip cut short with its index at the front: fomm-train trained on its first frames and
    printed hundreds of FFmpeg lines. Now it is skipped with one line that names it and its frame counts."""
    from tests import media_corpus as mc

    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for p in sorted((synthetic_data / "train").glob("*.mp4"))[:2]:
        (root / "train" / p.name).write_bytes(p.read_bytes())
    mc.truncated_front_index(root / "train" / "cut short.mp4")
    res = subprocess.run([str(Path(sys.executable).parent / "fomm-train"), "--config", str(_cli_config(tmp_path)),
                          "--data", str(root), "--epochs", "1", "--workers", "0", "--log-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert re.fullmatch(r"skipping cut short.mp4: .*cut short.mp4 is truncated: its index announces 100 frames and "
                        r"only \d+ are in the file .*", lines[0]), res.stderr
    assert "1 video(s) skipped, 2 used" in lines[1]
    assert not [line for line in lines if line.startswith("[")], res.stderr  # no FFmpeg line


def test_the_dataset_reads_frames_as_the_media_layer_does(tmp_path, synthetic_data):
    """What the media layer learned reaches training: a truncated MP4 is skipped as truncated (not as some
    unreadable file), and transparent pixels of a frame folder's PNGs come out white, as every other reader
    of images in the project shows them (not as whatever colour the file stores under them)."""
    from tests import media_corpus as mc

    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    mc.truncated(root / "test" / "cut off.mp4", root)
    frames = root / "test" / "transparent"
    frames.mkdir()
    for i in range(3):
        bgra = np.zeros((128, 128, 4), np.uint8)  # black under alpha 0, except a grey opaque square
        bgra[32:96, 32:96] = (90, 90, 90, 255)
        cv2.imwrite(str(frames / f"{i:04d}.png"), bgra)
    messages = []
    ds = FramesDataset(root, (128, 128, 3), is_train=False, log=messages.append)
    assert [p.name for p in ds.skipped] == ["cut off.mp4"]
    assert len(messages) == 1 and "truncated" in messages[0] and "cut off.mp4" in messages[0], messages
    video = ds[0]["video"]  # (C, T, H, W)
    assert video.shape == (3, 3, 128, 128)
    assert torch.all(video[:, :, 0, 0] == 1.0) and torch.allclose(video[:, :, 64, 64], torch.tensor(90 / 255))


def test_seeded_split_without_train_and_test_folders(tmp_path, synthetic_data):
    for p in sorted(synthetic_data.glob("*/*.mp4")):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    train_ds = FramesDataset(tmp_path, (128, 128, 3), is_train=True)
    test_ds = FramesDataset(tmp_path, (128, 128, 3), is_train=False)
    assert len(train_ds.videos) == 4 and len(test_ds.videos) == 1
    assert not set(train_ds.videos) & set(test_ds.videos)


def test_pair_indices_near_share_and_gap():
    """``dataset_params.near_pairs``: that share of the pairs at most max_gap frames apart, the rest as
    upstream draws them (the very same draws when near_pairs is absent, so existing runs resume the same)."""
    from fomm_deploy.training.config import NearPairs
    from fomm_deploy.training.data import pair_indices

    n = 50
    for seed in range(20):
        assert np.array_equal(pair_indices(n, np.random.default_rng(seed)),
                              np.sort(np.random.default_rng(seed).choice(n, size=2, replace=True)))

    def gaps(near, draws=3000):
        rng = np.random.default_rng(7)
        picks = np.array([pair_indices(n, rng, near) for _ in range(draws)])
        assert picks.min() >= 0 and picks.max() <= n - 1 and np.all(picks[:, 0] <= picks[:, 1])
        return picks[:, 1] - picks[:, 0]

    assert gaps(NearPairs(share=1.0, max_gap=3)).max() <= 3
    assert np.all(gaps(NearPairs(share=1.0, max_gap=0)) == 0)
    upstream, mixed = gaps(None), gaps(NearPairs(share=0.3, max_gap=3))
    near_upstream, near_mixed = np.mean(upstream <= 3), np.mean(mixed <= 3)
    assert near_upstream < 0.2 and 0.25 < near_mixed - near_upstream * 0.7 < 0.35, (near_upstream, near_mixed)
    assert mixed.max() > 3  # the rest still spans the video


def test_training_draws_near_pairs_from_the_config(tmp_path, synthetic_data):
    """The config's near_pairs reach fomm-train's dataset: with share 1 and max_gap 0 every pair is one frame
    twice (augmentation moves both frames alike), without it the two frames differ."""
    from fomm_deploy.training.train import _Training

    def pairs(**dataset):
        data = tiny_train_config().to_dict()
        data["dataset_params"].update(dataset)
        run = _Training(config_from_dict(data, name="tiny-near"),
                        TrainOptions(data=synthetic_data, log_dir=tmp_path / "run", progress=False), lambda m: None)
        return [run.dataset.dataset[(i % 4, 100 + i)] for i in range(12)]

    assert all(torch.equal(p["source"], p["driving"]) for p in pairs(near_pairs={"share": 1.0, "max_gap": 0}))
    assert not all(torch.equal(p["source"], p["driving"]) for p in pairs())


def test_near_pairs_out_of_range_is_a_config_error():
    from fomm_deploy.runtime.core.errors import ConfigError
    from fomm_deploy.training.config import training_config

    data = tiny_train_config().to_dict()
    data["dataset_params"]["near_pairs"] = {"share": 1.5, "max_gap": 2}
    with pytest.raises(ConfigError, match=r"near_pairs.*share in \[0, 1\].*share 1.5"):
        training_config(config_from_dict(data))


def test_flip_is_time_or_horizontal_never_both():
    from fomm_deploy.training.config import training_config

    params = training_config(resolve_config("vox-256")).dataset_params.augmentation_params
    no_jitter = type(params)(flip_param=params.flip_param)
    clip = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    seen = set()
    for seed in range(40):
        out = Augmenter(no_jitter, np.random.default_rng(seed))(clip)
        kinds = [name for name, ref in (("none", clip), ("time", clip[::-1]), ("horizontal", clip[:, :, ::-1]))
                 if np.array_equal(out, ref)]
        assert len(kinds) == 1, kinds
        seen.add(kinds[0])
    assert seen == {"none", "time", "horizontal"}
    jittered = Augmenter(params, np.random.default_rng(1))(clip)
    assert jittered.shape == clip.shape and 0 <= jittered.min() and jittered.max() <= 1


def test_vgg19_weights(tmp_path):
    cfg = resolve_config("tiny-test")
    models = build_models(cfg)
    with pytest.raises(FommError, match="--vgg19 PATH"):
        GeneratorFullModel(models.kp_detector, models.generator, None, cfg, None)
    torchvision_style = {k: v for k, v in Vgg19().state_dict().items() if k.startswith("features.")}
    torchvision_style["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, like the real file's classifier
    torch.save(torchvision_style, tmp_path / "vgg19.pth")
    vgg = Vgg19.from_file(tmp_path / "vgg19.pth")
    taps = vgg(torch.rand(1, 3, 32, 32))
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(FommError, match="not a torchvision VGG19 state dict"):
        Vgg19.from_file(tmp_path / "bad.pth")
    with pytest.raises(FommError, match="VGG19 weights not found"):
        Vgg19.from_file(tmp_path / "missing.pth")


def _states(path):
    raw = read_checkpoint(path)
    return {part: raw[part] for part in ("generator", "kp_detector", "discriminator")}, raw


def _assert_same_weights(a, b):
    """Every tensor of every network equal to the bit."""
    for part in a:
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, msg=f"{part}.{key}")


def test_resume_continues_with_identical_state(tmp_path, synthetic_data):
    cfg = tiny_train_config()
    straight = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "a", progress=False), log=lambda m: None)
    first = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "b", epochs=1, progress=False),
                  log=lambda m: None)
    assert first.name == "00000000-checkpoint.pth.tar"
    resumed = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "b", checkpoint=first, progress=False),
                    log=lambda m: None)
    assert straight.name == resumed.name == "00000001-checkpoint.pth.tar"
    a, raw_a = _states(straight)
    b, raw_b = _states(resumed)
    _assert_same_weights(a, b)
    assert raw_a["epoch"] == raw_b["epoch"] == 1
    assert raw_a["optimizer_generator"]["state"].keys() == raw_b["optimizer_generator"]["state"].keys()
    log_a = (tmp_path / "a" / "log.txt").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.txt").read_text().splitlines()
    assert log_a == log_b and len(log_a) == 2
    assert sorted(p.name for p in (tmp_path / "a" / "train-vis").iterdir()) == ["00000000-rec.png", "00000001-rec.png"]


def test_gan_configs_train_and_checkpoints_load_in_export(tmp_path, synthetic_data):
    data = resolve_config("tiny-test").to_dict()
    data["model_params"]["discriminator_params"].update(use_kp=True, sn=False)
    data["train_params"].update(perceptual_backbone="pixel", batch_size=2, num_repeats=1, checkpoint_freq=1,
                                scales=[1, 0.5])
    data["train_params"]["loss_weights"]["generator_gan"] = 1
    cfg = config_from_dict(data, name="tiny-gan")
    path = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "gan", epochs=1, progress=False),
                 log=lambda m: None)
    assert "gen_gan" in (tmp_path / "gan" / "log.txt").read_text()
    assert "disc_gan" in (tmp_path / "gan" / "log.txt").read_text()
    from fomm_deploy.export.exporter import run_export

    result = run_export(path, cfg, tmp_path / "exported")
    assert (result.out_dir / "generator.onnx").is_file()
    assert load_checkpoint(path, cfg, discriminator=True).epoch == 0


def test_reconstruction_reports_l1_and_the_copy_baseline(tmp_path, synthetic_data):
    cfg = tiny_train_config()
    path = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "r", epochs=1, progress=False),
                 log=lambda m: None)
    result = reconstruction(cfg, path, synthetic_data, tmp_path / "strips", progress=False, log=lambda m: None)
    assert result["videos"] == 1 and 0 < result["l1"] < 1 and 0 < result["copy_source_l1"] < 1
    assert len(list((tmp_path / "strips").glob("*.png"))) == 1


def _cli_config(tmp_path: Path, name: str = "tiny-train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_train_config().to_dict()))
    return path


def test_fomm_train_cli_modes(tmp_path, synthetic_data):
    script = Path(sys.executable).parent / "fomm-train"
    cfg = _cli_config(tmp_path, "tiny train.yaml")  # a config file whose name has a space
    run = lambda *a: subprocess.run([str(script), "--config", str(cfg), "--data", str(synthetic_data), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=600, cwd=tmp_path)
    res = run("--epochs", "1")  # the default log folder, log/<config>-<date>
    assert res.returncode == 0, res.stderr
    # The printed checkpoint pastes into a shell as one word, and the default folder's name needs no quoting.
    printed = shlex.split(res.stdout.rsplit("last checkpoint ", 1)[1])
    assert len(printed) == 1, res.stdout
    ckpt = tmp_path / printed[0]
    log_dir = ckpt.parent
    assert ckpt.name == "00000000-checkpoint.pth.tar" and ckpt.is_file() and (log_dir / "config.yaml").is_file()
    assert log_dir.parent == tmp_path / "log" and re.fullmatch(r"tiny-train-\d{8}-\d{6}", log_dir.name), log_dir
    # A second run into that folder would overwrite its checkpoints, config.yaml and images: refused, untouched.
    before = {p: p.read_bytes() for p in log_dir.rglob("*") if p.is_file()}
    res = run("--epochs", "1", "--log-dir", str(log_dir))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"Error: --log-dir {log_dir} holds another run (00000000-checkpoint.pth.tar, "
                                 "config.yaml, log.txt and 1 more), whose files this one would overwrite"), res.stderr
    assert {p: p.read_bytes() for p in log_dir.rglob("*") if p.is_file()} == before
    res = run("--mode", "reconstruction", "--checkpoint", str(ckpt))
    assert res.returncode == 0, res.stderr
    assert "reconstruction L1" in res.stdout and "copy-the-source-frame baseline" in res.stdout
    res = run("--mode", "animate", "--ckpt", str(ckpt))
    assert res.returncode == 0, res.stderr
    assert len(list((log_dir / "animation").glob("*.mp4"))) >= 1
    res = run("--mode", "reconstruction")
    assert res.returncode != 0 and "needs --ckpt" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([str(script), "--config", "tiny-test", "--data", str(synthetic_data), "--log-dir",
                          str(tmp_path / "v")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode != 0 and "--vgg19 PATH" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "v").exists()  # a run that failed before training leaves no log folder
    res = subprocess.run([str(script), "--config", "tiny-test", "--data", str(tmp_path / "nope"), "--log-dir",
                          str(tmp_path / "w")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode != 0 and "dataset folder not found" in res.stderr and "VGG19" not in res.stderr
    res = run("--device", "mps")
    assert res.returncode != 0 and "use cpu, cuda or cuda:N" in res.stderr and "Traceback" not in res.stderr


def test_a_log_dir_holding_another_run_needs_resume_or_force(tmp_path):
    from fomm_deploy.runtime.core.errors import InputError
    from fomm_deploy.training.cli import check_log_dir

    run = tmp_path / "run"
    check_log_dir(run, None, force=False)  # new
    run.mkdir()
    (run / "notes.md").write_text("my notes")
    check_log_dir(run, None, force=False)  # a folder without a run in it
    for name in ("00000004-checkpoint.pth.tar", "00000002-interrupted-checkpoint.pth.tar", "config.yaml", "log.txt",
                 "train-vis"):
        other = tmp_path / name.split(".")[0]
        other.mkdir()
        (other / name).mkdir() if name == "train-vis" else (other / name).write_bytes(b"another run's")
        with pytest.raises(InputError, match=f"holds another run \\({name}\\)"):
            check_log_dir(other, None, force=False)
        check_log_dir(other, None, force=True)
    ckpt = tmp_path / "00000004-checkpoint" / "00000004-checkpoint.pth.tar"
    check_log_dir(ckpt.parent, ckpt, force=False)  # resuming it in its own folder
    with pytest.raises(InputError, match="resume that run with --ckpt"):  # resuming another run into this one
        check_log_dir(tmp_path / "config", ckpt, force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_log_dir(tmp_path / "file", None, force=False)


def test_two_process_distributed_run_writes_one_checkpoint(tmp_path, synthetic_data):
    cfg = _cli_config(tmp_path)
    log_dir = tmp_path / "ddp"
    with warnings.catch_warnings():
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "fomm_deploy.training.cli", "--config", str(cfg), "--data", str(synthetic_data), "--log-dir",
                              str(log_dir), "--epochs", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 processes: global batch 2 = 2 x 1" in res.stderr  # upstream's batch_size is the global batch
    assert sorted(p.name for p in log_dir.glob("*.pth.tar")) == ["00000000-checkpoint.pth.tar"]
    assert len((log_dir / "log.txt").read_text().splitlines()) == 1  # only rank 0 writes
    load_checkpoint(log_dir / "00000000-checkpoint.pth.tar", tiny_train_config())


def test_animate_mode_reads_the_pairs_list(tmp_path, synthetic_data):
    from fomm_deploy.training.train import animate_pairs

    cfg = tiny_train_config()
    path = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "p", epochs=1, progress=False),
                 log=lambda m: None)
    name = sorted((synthetic_data / "test").glob("*.mp4"))[0].name
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"distance,source,driving,frame\n0,{name},{name},0\n1,missing.mp4,{name},0\n")
    data = cfg.to_dict()
    data["dataset_params"]["pairs_list"] = str(csv_path)
    messages = []
    written = animate_pairs(config_from_dict(data), path, synthetic_data, tmp_path / "anim", log=messages.append)
    assert [p.name for p in written] == [f"{name}-by-{name}.mp4"]
    assert any("not in the test set" in m for m in messages)


# -- resume, interruption, schedule, batch, visualisation (issue 16) ------------------------------------------


def test_scheduled_rate_is_closed_form():
    from fomm_deploy.training.train import scheduled_lr

    assert scheduled_lr(2e-4, (60, 90), 59) == pytest.approx(2e-4)
    assert scheduled_lr(2e-4, (60, 90), 60) == pytest.approx(2e-5)
    assert scheduled_lr(2e-4, (60, 90), 100) == pytest.approx(2e-6)  # a vox checkpoint at epoch 99 resumes here


def _lrs(path):
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {k: raw[k]["param_groups"][0]["lr"] for k in ("optimizer_generator", "optimizer_kp_detector")}


def test_upstream_checkpoint_resumes_at_the_rate_of_its_epoch(tmp_path, synthetic_data):
    # An upstream-layout checkpoint: no scheduler states, epoch 2, its optimizers already decayed once by
    # upstream's scheduler (milestone at 2). Resuming trains epoch 3 at 2e-5, not at 2e-6.
    cfg = tiny_train_config(epoch_milestones=[2], num_epochs=4)
    first = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "ours", epochs=1, workers=0,
                                    progress=False), log=lambda m: None)
    raw = torch.load(first, map_location="cpu", weights_only=True)
    upstream = {k: v for k, v in raw.items() if not k.startswith("scheduler_") and k != "fomm_progress"}
    upstream["epoch"] = 2
    for k in ("optimizer_generator", "optimizer_kp_detector", "optimizer_discriminator"):
        for group in upstream[k]["param_groups"]:
            group["lr"] = 2e-5
    up_path = tmp_path / "upstream" / "00000002-checkpoint.pth.tar"
    up_path.parent.mkdir()
    torch.save(upstream, up_path)
    messages = []
    resumed = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "upstream", checkpoint=up_path,
                                      epochs=4, workers=0, progress=False), log=messages.append)
    assert resumed.name == "00000003-checkpoint.pth.tar"  # one epoch: the one after the checkpoint's
    assert _lrs(resumed) == pytest.approx({"optimizer_generator": 2e-5, "optimizer_kp_detector": 2e-5})
    assert any("without scheduler states" in m for m in messages)
    # Our own checkpoints carry their scheduler states: resuming one at the milestone keeps the same rate.
    ours = train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "ours", epochs=3, workers=0,
                                   checkpoint=first, progress=False), log=lambda m: None)
    assert _lrs(ours) == pytest.approx({"optimizer_generator": 2e-5, "optimizer_kp_detector": 2e-5})
    with pytest.raises(FommError, match="already trained 4 of 4 epochs"):
        train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "upstream", checkpoint=resumed,
                                workers=0, progress=False), log=lambda m: None)


def _interrupt_at_sample(monkeypatch, k: int):
    """Deliver a real SIGINT to this process while the k-th training sample is being loaded."""
    import signal

    from fomm_deploy.training.data import FramesDataset

    original = FramesDataset.__getitem__
    calls = {"n": 0}

    def loading(self, item):
        calls["n"] += 1
        if calls["n"] == k:
            signal.raise_signal(signal.SIGINT)
        return original(self, item)

    monkeypatch.setattr(FramesDataset, "__getitem__", loading)
    return lambda: monkeypatch.setattr(FramesDataset, "__getitem__", original)


def test_sigint_writes_a_checkpoint_that_resumes_exactly(tmp_path, synthetic_data, monkeypatch):
    cfg = tiny_train_config(num_repeats=3)  # 2 epochs of several batches
    opts = dict(data=synthetic_data, workers=0, progress=False)
    straight = train(cfg, TrainOptions(log_dir=tmp_path / "a", **opts), log=lambda m: None)
    restore = _interrupt_at_sample(monkeypatch, k=len(FramesDataset(synthetic_data, (128, 128, 3)).videos) * 3 + 3)
    messages = []
    with pytest.raises(Interrupted) as info:
        train(cfg, TrainOptions(log_dir=tmp_path / "b", **opts), log=messages.append)
    restore()
    stopped = info.value.checkpoint
    assert info.value.signal_name == "SIGINT" and stopped.name == "00000001-interrupted-checkpoint.pth.tar", messages
    assert (tmp_path / "b" / "00000000-checkpoint.pth.tar").is_file()  # the completed epoch is kept
    raw = read_checkpoint(stopped)
    assert raw["epoch"] == 0 and raw["fomm_progress"]["epoch"] == 1 and raw["fomm_progress"]["batches_done"] == 2
    assert any("SIGINT" in m for m in messages) and any("stopped in epoch 2 after 2" in m for m in messages)
    resumed = train(cfg, TrainOptions(log_dir=tmp_path / "b", checkpoint=stopped, **opts), log=lambda m: None)
    assert resumed.name == straight.name == "00000001-checkpoint.pth.tar"
    a, _ = _states(straight)
    b, _ = _states(resumed)
    _assert_same_weights(a, b)
    assert (tmp_path / "a" / "log.txt").read_text() == (tmp_path / "b" / "log.txt").read_text()


def test_a_loader_failure_after_the_stop_signal_is_the_stop(tmp_path, synthetic_data, monkeypatch):
    """SIGTERM to the process group also reaches a loader worker, which may die of it before it ignores
    signals; the loader then fails in the training process. That failure is the stop, not an error: the
    run writes its interrupted checkpoint and raises Interrupted (it raised the loader's RuntimeError, and
    fomm-train ended in a traceback with exit 1, once in six runs of the process-group test)."""
    import signal

    from fomm_deploy.training.data import FramesDataset

    cfg = tiny_train_config(num_repeats=3)
    original, calls = FramesDataset.__getitem__, {"n": 0}
    k = len(FramesDataset(synthetic_data, (128, 128, 3)).videos) * 3 + 3  # in the second epoch

    def loading(self, item):
        calls["n"] += 1
        if calls["n"] == k:
            signal.raise_signal(signal.SIGTERM)
        if calls["n"] == k + 1:
            raise RuntimeError("DataLoader worker (pid 4242) exited unexpectedly")
        return original(self, item)

    monkeypatch.setattr(FramesDataset, "__getitem__", loading)
    messages = []
    with pytest.raises(Interrupted) as info:
        train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / "b", workers=0, progress=False),
              log=messages.append)
    assert info.value.signal_name == "SIGTERM", messages
    assert info.value.checkpoint.name == "00000001-interrupted-checkpoint.pth.tar", messages
    assert read_checkpoint(info.value.checkpoint)["fomm_progress"]["epoch"] == 1


def test_results_do_not_depend_on_loader_workers(tmp_path, synthetic_data):
    cfg = tiny_train_config()
    runs = [train(cfg, TrainOptions(data=synthetic_data, log_dir=tmp_path / f"w{w}", epochs=1, workers=w,
                                    progress=False), log=lambda m: None) for w in (0, 2)]
    a, _ = _states(runs[0])
    b, _ = _states(runs[1])
    _assert_same_weights(a, b)


def test_global_batch_is_shared_by_the_processes():
    from fomm_deploy.training.train import epoch_plan, per_process_batch

    assert per_process_batch(40, 4) == 10 and per_process_batch(2, 1) == 2
    with pytest.raises(FommError, match="global batch and must divide evenly across 3"):
        per_process_batch(40, 3)
    plans = [epoch_plan(23, epoch=5, seed=1, rank=r, world=2, batch=3) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 9  # 23 samples -> 3 whole global batches of 6
    positions = [i for plan in plans for i, _ in plan]
    assert len(set(positions)) == 18 and set(positions) <= set(range(23))
    assert epoch_plan(23, 5, 1, 0, 2, 3) == plans[0] and epoch_plan(23, 6, 1, 0, 2, 3) != plans[0]


def test_sigterm_to_the_process_group_stops_cleanly(tmp_path, synthetic_data):
    import os
    import signal
    import time

    cfg_path = tmp_path / "long.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_train_config(num_repeats=6, num_epochs=50, checkpoint_freq=100).to_dict()))
    log_dir = tmp_path / "run with space"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "fomm-train"), "--config", str(cfg_path), "--data",
                             str(synthetic_data), "--log-dir", str(log_dir), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (log_dir / "log.txt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the loader worker gets it too
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-2000:]
    assert "SIGTERM: stopping after this batch" in err and "resume with --ckpt" in err
    # The hint pastes into a shell as it is printed, the folder's space included (the elapsed time follows it).
    for hint in err.split("resume with --ckpt ")[1:]:
        hinted = Path(shlex.split(hint.splitlines()[0])[0])
        assert hinted.is_file() and hinted.parent == log_dir, err[-2000:]
    saved = sorted(log_dir.glob("*checkpoint.pth.tar"))
    assert saved and not list(log_dir.glob("*.tmp*")) and not list(log_dir.glob(".*"))
    raw = read_checkpoint(saved[-1])
    assert "generator" in raw and "kp_detector" in raw


def test_visualisation_has_upstreams_columns(golden_inputs):
    from fomm_deploy.training.visualize import gist_rainbow, visualisation_grid

    torch.manual_seed(0)
    cfg = tiny_train_config()
    models = build_models(cfg)
    full = GeneratorFullModel(models.kp_detector, models.generator, None, cfg, None)
    batch = {"source": torch.from_numpy(golden_inputs["driving"][:3]),
             "driving": torch.from_numpy(golden_inputs["driving"][1:4])}
    _, generated = full(batch, generator=torch.Generator().manual_seed(0))
    generated["deformed"] = models.generator.deform_input(batch["source"], generated["deformation"])  # as train() does
    grid = visualisation_grid(batch, generated, kp_size=5)
    regions = cfg.num_kp + 1  # background + one per keypoint
    # source, transformed, driving, deformed, prediction, occlusion, (sparse-deformed, mask) per region, sum
    assert grid.shape == (3 * 128, (6 + 2 * regions + 1) * 128, 3)
    # keypoint 3 of sample 1 is drawn in gist_rainbow(3 / 10) in the source column
    x, y = generated["kp_source"]["value"][1, 3].detach().numpy()
    px, py = int(128 * (x + 1) / 2), 128 + int(128 * (y + 1) / 2)
    if 0 < px < 127 and 128 < py < 255:
        np.testing.assert_allclose(grid[py, px] / 255, gist_rainbow(3 / 10), atol=0.01)
    assert (grid[:, 0] == 255).all() and (grid[:, 127] == 255).all()  # upstream's white border columns
