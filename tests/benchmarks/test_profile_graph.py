"""profile_graph: ONNX Runtime's profiler over one exported graph, on real feeds (what it measures, not how fast)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from fomm_deploy.benchmarks.profile_graph import kernel_times, profile_graph
from fomm_deploy.benchmarks.roofline import graph_work
from fomm_deploy.runtime.graphs import load_exported


def _run(ts: int, nodes: list[tuple[str, str, int]]) -> list[dict]:
    """ONNX Runtime's profile events of one run starting at ``ts`` (microseconds): its model_run, then its nodes."""
    events = [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 1000}]
    return events + [{"cat": "Node", "name": f"{node}_kernel_time", "ts": ts + 1 + i, "dur": dur,
                      "args": {"op_name": op}} for i, (op, node, dur) in enumerate(nodes)]


def test_kernel_times_leave_the_warm_up_runs_out_and_average_the_rest():
    warm = _run(0, [("Conv", "a", 90_000), ("Add", "b", 50_000)])  # first run: slow allocations
    timed = (_run(1000, [("Conv", "a", 3000), ("Add", "b", 1000)])
             + _run(2000, [("Conv", "a", 5000), ("Add", "b", 1000)]))
    by_op, by_node = kernel_times([{"cat": "Session", "name": "session_initialization", "ts": 0}, *warm, *timed], 1, 2)
    assert by_op == {"Conv": pytest.approx(4.0), "Add": pytest.approx(1.0)}  # ms per timed run
    assert by_node[("Conv", "a")] == pytest.approx(4.0)
    with pytest.raises(RuntimeError, match="holds 3 runs, not 4"):
        kernel_times(warm + timed, 2, 2)


def test_int8_generator_frame_profile_counts_every_timed_run(golden_export):
    exported = load_exported(golden_export)
    p = profile_graph(exported, "generator_frame", "int8", runs=2, warmup=3, threads=1)
    assert p.file == "generator_frame.int8.onnx" and len(p.wall_ms) == 2 and p.threads == 1
    # ONNX Runtime fused the QDQ convolutions: the int8 work is timed on QLinearConv, the float heads on Conv.
    assert "QLinearConv" in p.ops and "DequantizeLinear" in p.ops
    assert p.ops == dict(sorted(p.ops.items(), key=lambda kv: -kv[1]))
    assert sum(p.ops.values()) == pytest.approx(p.kernel_ms)
    assert sum(ms for *_, ms in p.nodes) == pytest.approx(p.kernel_ms)
    # per timed run: on one thread the kernels of a run take most of its wall time and cannot exceed it; with
    # the three warm-up runs counted too it would be 2.5 runs' worth
    assert 0.3 * min(p.wall_ms) < p.kernel_ms < 1.5 * max(p.wall_ms)
    work = graph_work(golden_export / "generator_frame.int8.onnx")
    assert (p.int8_gop, p.float_gflop) == (work.int8_gop, work.float_gflop) and p.int8_gop > 0
    assert p.conv_speed["int8 GOP/s"] == pytest.approx(work.int8_gop / (p.ops["QLinearConv"] / 1e3))


def test_fp32_kp_detector_at_int8_profiles_its_fp32_file(golden_export):
    p = profile_graph(load_exported(golden_export), "kp_detector", "int8", runs=1, warmup=0, threads=1)
    assert p.file == "kp_detector.onnx" and "QLinearConv" not in p.ops and "int8 GOP/s" not in p.conv_speed


def test_cli_writes_markdown_and_json(golden_export, tmp_path):
    md, js = tmp_path / "p r.md", tmp_path / "p r.json"
    args = ["--onnx", str(golden_export), "--graph", "frame_step", "--precision", "int8", "--runs", "2",
            "--threads", "1", "--top", "4", "--markdown", str(md), "--json", str(js)]
    res = subprocess.run([sys.executable, "-m", "fomm_deploy.benchmarks.profile_graph", *args], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = md.read_text()
    assert "`frame_step.int8.onnx` (frame_step, int8), 2 runs" in text and "| QLinearConv |" in text
    assert text.count("\n| `") == 4 and text in res.stdout  # the four slowest nodes; printed as written
    data = json.loads(js.read_text())
    assert data["graph"] == "frame_step" and len(data["wall_ms"]) == 2
    assert data["command"] == shlex.join(["python", "-m", "fomm_deploy.benchmarks.profile_graph", *args])
    assert f"'{md}'" in data["command"]  # a path with a space is quoted, so the command runs as recorded


def test_cli_says_what_is_wrong_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fomm_deploy.benchmarks.profile_graph", "--onnx", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr and "manifest" in res.stderr
