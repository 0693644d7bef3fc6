"""The convolution work counted from graphs, and the peak microbenchmark (what it computes, not how fast)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

from fomm_deploy.benchmarks.roofline import Peaks, Work, graph_work, measure_peaks


def _save(tmp_path, nodes, inits, name="g.onnx", shape=(None, 4, 10, 12)):
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    path = tmp_path / name
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 16)]), str(path))
    return path


def test_counts_float_and_quantised_convolutions(tmp_path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w2 = rng.integers(-127, 127, (4, 3, 1, 5)).astype(np.int8)  # 2 groups of 3 input channels, 1x5
    nodes = [h.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),  # 6 x 10 x 12
             h.make_node("Relu", ["a"], ["r"]),
             h.make_node("DequantizeLinear", ["w2q", "s"], ["w2"]),
             h.make_node("Conv", ["r", "w2"], ["y"], group=2, strides=[2, 1])]
    inits = [nh.from_array(w1, "w1"), nh.from_array(w2, "w2q"), nh.from_array(np.float32(0.1), "s")]
    work = graph_work(_save(tmp_path, nodes, inits))
    assert work.float_gflop == pytest.approx(2 * 6 * 10 * 12 * 4 * 9 / 1e9)
    # 4 outputs of 5 x 8 (stride 2 in rows, 1x5 kernel), each summing 3 channels (its group) x 5 taps
    assert work.int8_gop == pytest.approx(2 * 4 * 5 * 8 * 3 * 5 / 1e9)


def test_quantising_moves_work_from_float_to_int8(tmp_path):
    """The same graph, float and int8 (as fomm-export writes it): the same total, split differently."""
    from fomm_deploy.export.quantize import quantize_int8

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.1
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="/bottleneck/r0/conv1/Conv"),
             h.make_node("Relu", ["c"], ["y"])]
    fp32 = _save(tmp_path, nodes, [nh.from_array(w, "w")], "fp32.onnx", shape=(1, 4, 10, 12))
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx",
                         [{"x": rng.standard_normal((1, 4, 10, 12)).astype(np.float32)} for _ in range(2)])
    a, b = graph_work(fp32), graph_work(int8)
    assert a.int8_gop == 0 and b.float_gflop == 0
    assert b.int8_gop == pytest.approx(a.float_gflop) == pytest.approx(2 * 8 * 120 * 36 / 1e9)


def test_floor_adds_both_kinds_of_work():
    peaks = Peaks(fp32_gflops=200.0, int8_gops=800.0, threads=2, seconds=1.0)
    assert peaks.floor_ms(Work(int8_gop=80.0, float_gflop=4.0)) == pytest.approx(100 + 20)
    assert (Work(1, 2) + Work(3, 4)) == Work(4, 6)


def test_peak_microbenchmark_runs_both_precisions():
    peaks = measure_peaks(1, seconds=0.05, channels=32, size=16)
    assert peaks.fp32_gflops > 0 and peaks.int8_gops > 0 and peaks.threads == 1
    assert peaks.fp32_samples == [peaks.fp32_gflops] and peaks.int8_samples == [peaks.int8_gops]


def test_peak_graphs_chain_the_convolution_they_are_charged_for():
    """The fp32 peak graph is `depth` 3x3 convolutions back to back (what measure_peaks counts), and the int8
    one the same chain of QLinearConv on uint8."""
    import onnxruntime as ort
    import torch

    from fomm_deploy.benchmarks.roofline import _peak_models

    (fp32, x32), (int8, x8) = _peak_models(6, 5, 3, depth=3)
    w = torch.from_numpy(nh.to_array(fp32.graph.initializer[0]))
    expected = torch.from_numpy(x32)
    for _ in range(3):
        expected = torch.nn.functional.conv2d(expected, w, padding=1)
    got = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x32})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert [n.op_type for n in int8.graph.node] == ["QLinearConv"] * 3
    y8 = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x8})[0]
    assert y8.dtype == np.uint8 and y8.shape == x8.shape


def test_peaks_of_several_runs_are_their_means():
    a = Peaks(100.0, 300.0, 2, 1.0, [100.0], [300.0])
    b = Peaks(80.0, 260.0, 2, 1.5, [80.0], [260.0])
    both = Peaks.mean(a, b)
    assert (both.fp32_gflops, both.int8_gops, both.seconds) == (90.0, 280.0, 2.5)
    assert both.fp32_samples == [100.0, 80.0] and both.int8_samples == [300.0, 260.0]


def test_each_path_is_charged_the_work_of_the_graph_files_it_runs(tmp_path):
    """add_work: an ONNX Runtime int8 entry counts the int8 files (the kp_detector's fp32 one, as deployed),
    the torch backend and the baseline the fp32 files; with peaks, floor and x floor follow."""
    import types

    from fomm_deploy.benchmarks.bench import Entry, add_work
    from fomm_deploy.export.quantize import quantize_int8
    from fomm_deploy.runtime.core.manifest import graph_file_name

    rng = np.random.default_rng(2)

    def conv_graph(name, out_ch):
        w = (rng.standard_normal((out_ch, 4, 3, 3)) * 0.1).astype(np.float32)
        nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="/bottleneck/r0/conv1/Conv"),
                 h.make_node("Relu", ["c"], ["y"])]
        return _save(tmp_path, nodes, [nh.from_array(w, "w")], name, shape=(1, 4, 10, 12))

    for graph, out_ch in (("kp_detector", 2), ("generator_frame", 8), ("generator", 16)):
        fp32 = conv_graph(graph_file_name(graph, "fp32"), out_ch)
        if graph != "kp_detector":  # kp_detector stays fp32 at int8 (its int8 file name is the fp32 one)
            quantize_int8(fp32, tmp_path / graph_file_name(graph, "int8"),
                          [{"x": rng.standard_normal((1, 4, 10, 12)).astype(np.float32)} for _ in range(2)])
    unit = 2 * 120 * 36 / 1e9  # one output channel of these convs
    entries = [Entry(b, p, v, 10.0, 10.0, 10.0, 100.0, 1.0) for b, p, v in (
        ("onnxruntime", "int8", "split"), ("torch", "int8", "split"), ("upstream-eager", "fp32", "baseline"))]
    add_work(entries, types.SimpleNamespace(dir=tmp_path),
             [Peaks(fp32_gflops=1.0, int8_gops=4.0, threads=1, seconds=0)] * len(entries))
    ort_int8, torch_entry, baseline = entries
    assert ort_int8.int8_gop == pytest.approx(8 * unit) and ort_int8.float_gflop == pytest.approx(2 * unit)
    assert torch_entry.int8_gop == 0 and torch_entry.float_gflop == pytest.approx(10 * unit)
    assert baseline.int8_gop == 0 and baseline.float_gflop == pytest.approx(18 * unit)
    assert ort_int8.floor_ms == pytest.approx(1000 * (8 * unit / 4.0 + 2 * unit / 1.0))
    assert ort_int8.x_floor == pytest.approx(10.0 / ort_int8.floor_ms)
