"""benchmarks/gpu_check.py --smoke: the GPU check's code paths on the CPU, every section written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fomm_deploy.benchmarks import gpu_check


def test_gpu_check_smoke_writes_every_section(tmp_path):
    run = subprocess.run([sys.executable, "-W", "ignore", "-m", "fomm_deploy.benchmarks.gpu_check", "--smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("gpu-") and files[0].endswith(".json") and files[1].endswith(".md")
    report = json.loads((tmp_path / files[0]).read_text())
    sections = report["sections"]
    assert list(sections) == ["cuda_layer", "trt_logic", "fp16_numerics", "latency"]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    assert report["fixtures"] == {"golden": str(gpu_check.CHECKOUT_GOLDEN / "checkpoint.pth.tar"),
                                  "demo": str(gpu_check.CHECKOUT_DEMO_CKPT)}  # found in this checkout
    layer = sections["cuda_layer"]["result"]
    assert layer["frame_round_trip"]["bytes"] == 3 * 256 * 256 * 4 and layer["frame_round_trip"]["h2d_GBps"] > 0
    trt = sections["trt_logic"]["result"]
    # with CUDA graphs execute_async_v3 runs for the warm-up and the capture of each batch size only
    assert trt["generator_frame.cuda_graph=True"]["ok"] and trt["generator_frame.cuda_graph=False"]["ok"]
    numerics = sections["fp16_numerics"]["result"]
    assert numerics["all_within_budget"]
    assert numerics["golden-small"]["kp_detector"]["kp_max_px"] == 0  # the policy keeps it fp32
    assert numerics["golden-small"]["generator_frame"]["prediction_psnr_db"] >= 40
    latency = sections["latency"]["result"]["variants"]
    assert latency["fp32 eager, no TF32"]["fps"] > 0
    md = (tmp_path / files[1]).read_text()
    for name in sections:
        assert f"## {name}: ok" in md


def test_gpu_check_without_a_gpu_says_use_smoke(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    run = subprocess.run([sys.executable, "-m", "fomm_deploy.benchmarks.gpu_check", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--smoke" in run.stderr and not list(tmp_path.iterdir())


def test_a_missing_golden_fixture_stops_the_check_before_it_starts(tmp_path):
    out = tmp_path / "report"
    run = subprocess.run([sys.executable, "-m", "fomm_deploy.benchmarks.gpu_check", "--smoke", "--out", str(out),
                          "--golden", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "golden fixture" in run.stderr and str(tmp_path / "nowhere") in run.stderr and "--golden" in run.stderr
    assert not out.exists()


def test_the_fixtures_are_found_by_option_environment_or_checkout(tmp_path, monkeypatch):
    folder = tmp_path / "golden small"
    folder.mkdir()
    (folder / "checkpoint.pth.tar").write_bytes(b"x")
    demo = tmp_path / "demo.pth.tar"
    demo.write_bytes(b"x")
    assert gpu_check.golden_checkpoint(folder, {}) == folder / "checkpoint.pth.tar"
    assert gpu_check.golden_checkpoint(folder / "checkpoint.pth.tar", {}) == folder / "checkpoint.pth.tar"
    assert gpu_check.golden_checkpoint(None, {"FOMM_GOLDEN_DIR": str(folder)}) == folder / "checkpoint.pth.tar"
    assert gpu_check.demo_checkpoint(demo) == demo
    # an installed package: nothing where a checkout keeps them
    monkeypatch.setattr(gpu_check, "CHECKOUT_GOLDEN", tmp_path / "site-packages" / "tests" / "data" / "golden-small")
    monkeypatch.setattr(gpu_check, "CHECKOUT_DEMO_CKPT", tmp_path / "site-packages" / "checkpoints" / "demo.pth.tar")
    with pytest.raises(gpu_check.FixtureMissing, match="installed package does not hold tests/data.*--golden"):
        gpu_check.golden_checkpoint(None, {})
    with pytest.raises(gpu_check.FixtureMissing, match="FOMM_GOLDEN_DIR="):
        gpu_check.golden_checkpoint(None, {"FOMM_GOLDEN_DIR": str(tmp_path / "elsewhere")})
    with pytest.raises(gpu_check.FixtureMissing, match="--demo-ckpt"):
        gpu_check.demo_checkpoint(None)
