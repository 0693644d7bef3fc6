"""fomm-bench produces its JSON, table and chart (no timing is asserted: speed is measured, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest


def _bench(*args, cwd):
    script = Path(sys.executable).parent / "fomm-bench"
    return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_bench_writes_json_markdown_and_chart(tmp_path, golden_dir):
    res = _bench("--config", "tiny-test", "--ckpt", golden_dir / "checkpoint.pth.tar", "--warmup", "1", "--iters",
                 "3", "--backends", "onnxruntime:fp32,torch:fp32", "--peak", "--json", tmp_path / "b.json", "--markdown",
                 tmp_path / "b.md", "--chart", tmp_path / "b.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["baseline_median_ms"] > 0 and data["baseline"]["backend"] == "upstream-eager"
    combos = {(r["backend"], r["precision"], r["variant"]) for r in data["results"]}
    assert combos == {(backend, "fp32", variant) for backend in ("onnxruntime", "torch")
                      for variant in ("reference", "split", "frame_step")}
    for r in data["results"]:
        assert {"backend", "precision", "variant", "median_ms", "p90_ms", "p99_ms", "fps", "peak_mb"} <= set(r)
        assert r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["fps"] > 0 and r["peak_mb"] > 0
        assert r["vs_baseline"] == r["median_ms"] / data["baseline_median_ms"]
        assert ("frame_step" if r["variant"] == "frame_step" else "kp_detector") in r["stages_ms"]
        # work counted from the graphs it ran (int8 none here), floor from the measured peaks
        assert r["int8_gop"] == 0 and r["float_gflop"] > 0
        assert r["floor_ms"] == pytest.approx(1000 * r["float_gflop"] / r["peaks"]["fp32_gflops"])
        assert r["x_floor"] == pytest.approx(r["median_ms"] / r["floor_ms"])
    by_variant = {r["variant"]: r["float_gflop"] for r in data["results"] if r["backend"] == "onnxruntime"}
    assert by_variant["split"] < by_variant["reference"]  # the source encoder runs once per source, not per step
    assert by_variant["frame_step"] == pytest.approx(by_variant["split"], rel=0.01)  # the same convolutions
    assert data["peaks"]["fp32_gflops"] > 0 and data["peaks"]["int8_gops"] > 0
    # sampled before the first path (the baseline) and after each; each path's floor uses the two around it
    fp32 = data["peaks"]["fp32_samples"]
    assert len(fp32) == len(data["peaks"]["int8_samples"]) == 2 + len(data["results"])
    assert data["peaks"]["fp32_gflops"] == pytest.approx(sum(fp32) / len(fp32))
    for i, r in enumerate([data["baseline"]] + data["results"]):
        assert r["peaks"]["fp32_samples"] == fp32[i:i + 2]
        assert r["peaks"]["fp32_gflops"] == pytest.approx((fp32[i] + fp32[i + 1]) / 2)
    assert {"cpu", "cores", "gpu", "torch", "onnxruntime", "isa", "cpu_family_model"} <= set(data["machine"])
    md = (tmp_path / "b.md").read_text()
    assert md.startswith("Command: `fomm-bench --config tiny-test") and "| upstream-eager | fp32 | baseline |" in md
    assert "Measured peaks" in md and "| x floor |" in md
    chart = cv2.imread(str(tmp_path / "b.png"))
    assert chart is not None and chart.shape[1] == 1100
    assert "vs upstream eager" in res.stdout


def test_bench_rejects_a_bad_backend_list(tmp_path):
    for bad, why in (("onnxruntime:int9", "unknown precision"), ("tensorrt:int8", "int8 graphs are for ONNX Runtime"),
                     ("onnx:fp32", "unknown backend")):
        res = _bench("--config", "tiny-test", "--backends", bad, cwd=tmp_path)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert why in res.stderr, res.stderr


def test_variants_are_reference_and_or_split():
    from fomm_deploy.benchmarks.cli import parse_variants
    from fomm_deploy.runtime.core.errors import InputError

    assert parse_variants("split, reference") == ("split", "reference")
    for bad in ("", " , ", "reference,fast"):
        with pytest.raises(InputError, match="--variants takes reference and/or split"):
            parse_variants(bad)


def test_bench_opens_the_torch_backend_without_torch_compile(monkeypatch):
    """The torch backend compiles by default on CUDA; fomm-bench times it eager (no GPU needed: the animator is a
    stand-in that records its options)."""
    import torch

    from fomm_deploy.benchmarks import bench

    seen = {}

    class Opened(Exception):
        pass

    def open_animator_stand_in(exported, backend, precision, **options):
        seen.update(options)
        raise Opened

    monkeypatch.setattr(bench, "open_animator", open_animator_stand_in)
    with pytest.raises(Opened):
        bench.bench_backend(None, "torch", "fp32", "frame_step", None, None, warmup=1, iters=1,
                            threads=torch.get_num_threads(), device="cuda")
    assert seen["compile"] is False and seen["device"] == "cuda" and seen["frame_step"]


def test_bench_checks_its_outputs_and_the_export_before_any_work(tmp_path, golden_dir):
    # The checkpoint does not exist: had the benchmark read it, exported or timed anything first, that would fail.
    for args, message in ((("--json", "/proc/nope/x.json"), "cannot write --json"),
                          (("--chart", str(tmp_path / "chart")), "--chart must end in .png")):
        res = _bench("--config", "tiny-test", "--ckpt", tmp_path / "missing.pth.tar", *args, cwd=tmp_path)
        assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert "checkpoint" not in res.stderr, res.stderr
    from fomm_deploy.export.exporter import run_export
    from fomm_deploy.runtime.core.config import resolve_config

    out = tmp_path / "tiny export"
    run_export(golden_dir / "checkpoint.pth.tar", resolve_config("tiny-test"), out, emulate_fp16=False)
    res = _bench("--onnx", str(out), "--config", "vox-256", cwd=tmp_path)
    assert res.returncode == 1 and "exported with config 'tiny-test', not 'vox-256'" in res.stderr
    assert "random.pth.tar" not in res.stderr
