"""fomm-bench --peers: torch.compile of upstream's modules and OpenVINO on the exported graphs, timed beside
the project's paths, each with its prediction against upstream eager's (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from fomm_deploy.benchmarks.bench import LATENCY_ONLY, BenchResult, Entry, Skipped, bench_frames, draw_chart, \
    markdown_table, run_upstream
from fomm_deploy.benchmarks.peers import OPENVINO_MISSING, bench_openvino, native_bf16
from fomm_deploy.runtime.core.config import resolve_config

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, golden_dir):
    """The golden checkpoint exported at fp32 and int8 (with the split graphs), as fomm-bench exports."""
    from fomm_deploy.export.exporter import run_export
    from fomm_deploy.runtime.graphs import load_exported

    out = tmp_path_factory.mktemp("peers") / "tiny"
    run_export(golden_dir / "checkpoint.pth.tar", resolve_config("tiny-test"), out, precision="int8",
               budgets=LATENCY_ONLY, emulate_fp16=False)
    return load_exported(out)


def test_native_bf16_reads_the_cpu_flags():
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"}) is None
    assert native_bf16({"avx2", "amx_bf16", "amx_int8"}) is None
    assert "no native bf16" in native_bf16({"avx2", "fma", "avx512f", "avx512bw"})
    assert "cannot tell" in native_bf16(set())


def test_openvino_peers_are_skipped_with_the_reason_without_the_package():
    # A fresh interpreter where `import openvino` fails, as where it is not installed; the export is never read.
    code = ("import json, sys; sys.modules['openvino'] = None\n"
            "from fomm_deploy.benchmarks.peers import PEERS, bench_openvino\n"
            "rows = [bench_openvino(None, p, None, None, None, warmup=1, iters=3, threads=1) for b, p, _ in PEERS "
            "if b == 'openvino']\n"
            "print(json.dumps([[type(r).__name__, r.backend, r.precision, r.reason] for r in rows]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r[2] for r in rows] == ["fp32", "bf16", "int8", "int8+bf16"]
    for kind, backend, _, reason in rows:
        assert (kind, backend, reason) == ("Skipped", "openvino", OPENVINO_MISSING)
        assert "pip install openvino" in reason


def test_peer_rows_and_a_skipped_peer_with_its_reason(tmp_path):
    e = Entry("upstream-eager", "fp32", "baseline", 10.0, 11.0, 12.0, 100.0, 300.0, {"generator": 9.0})
    peer = Entry("openvino", "bf16", "split", 4.0, 5.0, 6.0, 250.0, 400.0, {"generator_frame": 3.5}, vs_baseline=0.4,
                 files="fp32", compile_s=1.5, detail={"inference precision": "bf16"},
                 parity={"frames": 8, "max_abs_diff": 0.01, "psnr_db": 41.23})
    result = BenchResult("fomm-bench --peers", "tiny-test", "random", {"cpu": "x"}, 1, 3, 2, None, e, [], 1.0,
                         peers=[peer], skipped=[Skipped("openvino", "int8", "split", OPENVINO_MISSING)])
    lines = markdown_table(result).splitlines()
    header = next(line for line in lines if line.startswith("| backend"))
    row = next(line for line in lines if line.startswith("| openvino (peer) | bf16"))
    assert "| 0.40x |" in row and "| 0.01, 41.2 dB |" in row and "compile 1.5 s (not in the steps)" in row, row
    skipped = next(line for line in lines if line.startswith("| openvino (peer) | int8"))
    assert skipped.startswith("| openvino (peer) | int8 | split | skipped |")
    assert skipped.endswith(f" {OPENVINO_MISSING} |")
    assert row.count("|") == skipped.count("|") == header.count("|")
    chart = cv2.imread(str(draw_chart(result, tmp_path / "c.png")))
    assert chart is not None and chart.shape[1] == 1100
    assert json.loads(json.dumps(result.to_json()))["peers_skipped"] == [
        {"backend": "openvino", "precision": "int8", "variant": "split", "reason": OPENVINO_MISSING}]


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'fomm-deploy[peers]')")
def test_openvino_peers_run_the_split_graphs_at_their_precision(tiny_export, golden_dir):
    source, frames = bench_frames(tiny_export.config, 4)
    _, reference = run_upstream(golden_dir / "checkpoint.pth.tar", tiny_export.config, source, frames, warmup=0,
                                iters=3, threads=2, predictions=True)
    rows = {p: bench_openvino(tiny_export, p, source, frames, reference, warmup=1, iters=3, threads=2)
            for p in ("fp32", "bf16", "int8", "int8+bf16")}
    for precision, r in rows.items():
        if isinstance(r, Skipped):  # only bf16, and only on a CPU whose plugin does not offer it
            assert precision.endswith("bf16") and "offers no bf16" in r.reason, r
            continue
        assert r.backend == "openvino" and r.variant == "split" and 0 < r.median_ms <= r.p90_ms <= r.p99_ms
        assert r.compile_s > 0 and set(r.stages_ms) >= {"kp_detector", "generator_frame"}
        assert r.files == ("int8" if precision.startswith("int8") else "fp32")
        assert r.parity["frames"] == 4 and r.parity["psnr_db"] > 20, r.parity
        convs = r.detail["per-frame convolutions at"]
        assert r.detail["inference precision"] == ("bf16" if precision.endswith("bf16") else "f32")
        # what ran: the int8 graphs' quantized convolutions on u8 kernels, the float ones at the hint
        assert ("u8" in convs) == precision.startswith("int8"), convs
        assert ("bf16" in convs) == precision.endswith("bf16") and ("f32" in convs) != precision.endswith("bf16")
    # fp32 computes what upstream eager computes
    assert rows["fp32"].parity["psnr_db"] > 80 and rows["fp32"].parity["max_abs_diff"] < 1e-3, rows["fp32"].parity


@pytest.mark.slow  # torch.compile with Inductor compiles C++ for minutes on 2 cores
def test_bench_peers_rows_beside_the_project_paths(tmp_path, tiny_export, golden_dir):
    script = Path(sys.executable).parent / "fomm-bench"
    res = subprocess.run([str(script), "--onnx", str(tiny_export.dir), "--ckpt", str(golden_dir / "checkpoint.pth.tar"),
                          "--warmup", "1", "--iters", "3", "--backends", "onnxruntime:int8", "--variants", "split",
                          "--peak", "--peers", "--json", "b.json", "--markdown", "b.md"],
                         capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    peers = {(p["backend"], p["precision"]): p for p in data["peers"]}
    skipped = {(s["backend"], s["precision"]): s["reason"] for s in data["peers_skipped"]}
    expected = {("torch-compile", "fp32"), ("torch-compile", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"),
                ("openvino", "int8"), ("openvino", "int8+bf16")}
    assert set(peers) | set(skipped) == expected and not set(peers) & set(skipped)
    assert ("torch-compile", "fp32") in peers
    if native_bf16() is None:
        assert ("torch-compile", "bf16") in peers
    else:
        assert "native bf16" in skipped[("torch-compile", "bf16")]
    for key in (k for k in expected if k[0] == "openvino"):
        assert (key in peers) == HAS_OPENVINO or "offers no bf16" in skipped.get(key, "")
    compiled = peers[("torch-compile", "fp32")]
    assert compiled["detail"]["graphs compiled"] >= 2 and compiled["compile_s"] > 0  # it really compiled
    assert compiled["parity"]["psnr_db"] > 80 and compiled["parity"]["max_abs_diff"] < 1e-3
    for p in data["peers"]:
        assert p["median_ms"] <= p["p90_ms"] <= p["p99_ms"] and p["peak_mb"] > 0 and p["compile_s"] > 0
        assert p["vs_baseline"] == p["median_ms"] / data["baseline_median_ms"]
        assert p["parity"]["frames"] == 8 and p["parity"]["psnr_db"] > 20, p
        assert p["float_gflop"] > 0 and (p["int8_gop"] > 0) == p["precision"].startswith("int8")
        # a floor where the measured peaks apply (fp32, int8), none for bf16
        assert (p["floor_ms"] is None) == ("bf16" in p["precision"]), p
    assert data["results"][0]["parity"]["psnr_db"] > 20  # the project's own path, on the same frames
    md = (tmp_path / "b.md").read_text()
    assert "| torch-compile (peer) | fp32 | upstream |" in md and "vs eager (max abs, PSNR)" in md
    for backend, precision in skipped:
        assert f"| {backend} (peer) | {precision} | " in md
