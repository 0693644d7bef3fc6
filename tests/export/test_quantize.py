"""What the int8 quantiser quantises, and what ONNX Runtime then runs, on a graph of the shape FOMM's blocks have."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnxruntime as ort
from onnx import TensorProto as T, helper as h, numpy_helper as nh

from fomm_deploy.export.quantize import int8_node_names, quantize_int8


def _block(tmp_path):
    """conv1 -> ReLU -> conv2 -> ReLU, and conv2's output also read by an Add (so that ReLU stays float)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)
    pads = [1, 1, 1, 1]
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=pads, name="/bottleneck/r0/conv1/Conv"),
             h.make_node("Relu", ["c1"], ["r1"], name="/bottleneck/r0/Relu"),
             h.make_node("Conv", ["r1", "w2"], ["c2"], pads=pads, name="/bottleneck/r0/conv2/Conv"),
             h.make_node("Relu", ["c2"], ["r2"], name="/bottleneck/r0/Relu_1"),
             h.make_node("Add", ["r2", "c2"], ["y"], name="/bottleneck/r0/Add")]
    graph = h.make_graph(nodes, "block", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 12, 12])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 12, 12])],
                         [nh.from_array(w1, "w1"), nh.from_array(w2, "w2")])
    path = tmp_path / "block.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 16)]), str(path))
    feeds = [{"x": rng.standard_normal((1, 4, 12, 12)).astype(np.float32)} for _ in range(4)]
    return path, feeds


def test_a_relu_that_alone_reads_a_conv_is_folded(tmp_path):
    path, feeds = _block(tmp_path)
    names = int8_node_names(onnx.load(str(path)))
    assert set(names) == {"/bottleneck/r0/conv1/Conv", "/bottleneck/r0/Relu", "/bottleneck/r0/conv2/Conv"}
    int8 = onnx.load(str(quantize_int8(path, tmp_path / "block.int8.onnx", feeds)))
    relus = [n.name for n in int8.graph.node if n.op_type == "Relu"]
    assert relus == ["/bottleneck/r0/Relu_1"]  # conv2's output has two readers: its ReLU stays
    # ONNX Runtime runs the two convolutions back to back on uint8
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(tmp_path / "block.int8.onnx"), so, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    ops = [n.op_type for n in optimised.graph.node]
    assert ops.count("QLinearConv") == 2 and "Relu" in ops
    producers = {o: n for n in optimised.graph.node for o in n.output}
    first, second = [n for n in optimised.graph.node if n.op_type == "QLinearConv"]
    source = producers[second.input[0]]
    while source.op_type == "Transpose":  # layout changes between the two (NCHW <-> NHWC) move uint8 values
        source = producers[source.input[0]]
    assert source is first  # no float hop between them: no DequantizeLinear, ReLU or QuantizeLinear


def test_folding_rounds_once_where_float_relu_rounded_twice(tmp_path):
    """The folded graph is no further from the float graph than the same quantisation with the ReLU left
    in float (conv1's output rounded to its own range, then again to the ReLU's)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path, feeds = _block(tmp_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    unfolded = tmp_path / "unfolded.onnx"
    quantize_static(str(path), str(unfolded), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_quantize=["/bottleneck/r0/conv1/Conv", "/bottleneck/r0/conv2/Conv"],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    folded = quantize_int8(path, tmp_path / "folded.onnx", feeds)

    def error(model):
        # The QDQ graphs as written, each QuantizeLinear / DequantizeLinear on its own around float Convs: the
        # rounding the quantisation defines, not the fused int8 kernels of this CPU (which differ between CPUs:
        # AVX2's saturate, VNNI's do not).
        exact = ort.SessionOptions()
        exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(model), exact, providers=["CPUExecutionProvider"])
        return float(np.mean([np.abs(got.run(None, f)[0] - ref.run(None, f)[0]).mean() for f in feeds]))

    assert sum(n.op_type == "Relu" for n in onnx.load(str(unfolded)).graph.node) == 2
    assert error(folded) <= error(unfolded)


def test_a_conv_that_feeds_a_sigmoid_softmax_or_grid_sample_stays_float(tmp_path):
    """A head conv inside the quantised scopes whose output goes into a Sigmoid (the occlusion map), a Softmax
    (the motion mask) or an Exp is left in float, so logits and masks are never rounded to 256 levels."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)
    for op in ("Sigmoid", "Softmax", "Exp"):
        nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="/hourglass/decoder/conv/Conv"),
                 h.make_node("Conv", ["c", "w"], ["logits"], pads=[1, 1, 1, 1], name="/hourglass/head/Conv"),
                 h.make_node(op, ["logits"], ["y"], name="/head_out")]
        graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 8, 8])],
                             [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 8, 8])], [nh.from_array(w, "w")])
        names = int8_node_names(h.make_model(graph, opset_imports=[h.make_opsetid("", 16)]))
        assert names == ["/hourglass/decoder/conv/Conv"], (op, names)


def _qdq_interleave(extra_reader: bool = False, second_scale: float = 0.02):
    """x -> Q -> DQ -> two slices -> Concat (with a second Q/DQ'd tensor) -> Reshape -> Q -> DQ -> y, plus a Shape
    of the Concat; the shape of the up blocks' interleave after quantisation."""
    def qdq(name, src, scale):
        return [h.make_node("QuantizeLinear", [src, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}/Q"),
                h.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"], name=f"{name}/DQ")
                ], [nh.from_array(np.array(scale, np.float32), f"{name}_s"), nh.from_array(np.array(3, np.uint8), f"{name}_z")]
    nodes, inits = qdq("a", "x", 0.02)
    more, more_inits = qdq("b", "x2", second_scale)
    out, out_inits = qdq("o", "reshaped", 0.02)
    inits += more_inits + out_inits + [nh.from_array(np.array(v, np.int64), k) for k, v in
                                       {"s0": [0], "e0": [2], "s1": [2], "e1": [4], "ax": [1], "shape": [1, -1]}.items()]
    nodes += more + [
        h.make_node("Slice", ["a_dq", "s0", "e0", "ax"], ["lo"], name="/up_blocks.0/Slice"),
        h.make_node("Slice", ["a_dq", "s1", "e1", "ax"], ["hi"], name="/up_blocks.0/Slice_1"),
        h.make_node("Concat", ["hi", "lo", "b_dq"], ["cat"], axis=1, name="/up_blocks.0/Concat"),
        h.make_node("Shape", ["cat"], ["cat_shape"], name="/up_blocks.0/Shape"),
        h.make_node("Reshape", ["cat", "shape"], ["reshaped"], name="/up_blocks.0/Reshape")] + out + [
        h.make_node("Relu", ["o_dq"], ["y"], name="/head/Relu")]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("cat_shape", T.INT64, None)]
    if extra_reader:  # a float reader of the first dequantised tensor: that DequantizeLinear must stay
        nodes.append(h.make_node("Sigmoid", ["a_dq"], ["side"], name="/head/Sigmoid"))
        outputs.append(h.make_tensor_value_info("side", T.FLOAT, None))
    graph = h.make_graph(nodes, "interleave", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 3, 3]),
                                               h.make_tensor_value_info("x2", T.FLOAT, [1, 2, 3, 3])], outputs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 16)])


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_data_movement_runs_on_uint8_and_gives_the_same_numbers():
    from fomm_deploy.export.quantize import sink_dequantize

    rng = np.random.default_rng(0)
    feeds = {"x": rng.uniform(-0.05, 5, (1, 4, 3, 3)).astype(np.float32),
             "x2": rng.uniform(-0.05, 5, (1, 2, 3, 3)).astype(np.float32)}
    model = _qdq_interleave()
    expected = _run(model, feeds)
    assert sink_dequantize(model) > 0
    producers = {o: n for n in model.graph.node for o in n.output}
    ops = [n.op_type for n in model.graph.node]
    for name in ("/up_blocks.0/Slice", "/up_blocks.0/Slice_1", "/up_blocks.0/Concat", "/up_blocks.0/Shape",
                 "/up_blocks.0/Reshape"):
        node = next(n for n in model.graph.node if n.name == name)
        assert producers[node.input[0]].op_type != "DequantizeLinear", name  # reads uint8
    # Reshape -> DQ -> Q with the same parameters is gone: one DQ left, before the float ReLU
    assert ops.count("DequantizeLinear") == 1 and ops.count("QuantizeLinear") == 2
    for got, want in zip(_run(model, feeds), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["a float reader", "different scales"])
def test_a_dequantised_tensor_that_float_ops_read_is_dequantised_once(case):
    """No tensor is dequantised twice: a DequantizeLinear with a non-mover reader, or a Concat of tensors with
    different scales, stays where it was."""
    from fomm_deploy.export.quantize import sink_dequantize

    model = _qdq_interleave(extra_reader=case == "a float reader", second_scale=0.02 if case == "a float reader" else 0.03)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.uniform(0, 5, (1, 4, 3, 3)).astype(np.float32), "x2": rng.uniform(0, 5, (1, 2, 3, 3)).astype(np.float32)}
    expected = _run(model, feeds)
    sink_dequantize(model)
    ops = [n.op_type for n in model.graph.node]
    producers = {o: n for n in model.graph.node for o in n.output}
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    slices = [n for n in model.graph.node if n.op_type == "Slice"]
    def float_tensor(name):
        node = producers[name]
        return node.op_type == "DequantizeLinear" or (node.op_type == "Slice" and float_tensor(node.input[0]))
    assert all(float_tensor(i) for i in concat.input)  # the Concat stays float
    if case == "a float reader":  # a is dequantised once, for the sigmoid and the slices
        assert all(producers[s.input[0]].op_type == "DequantizeLinear" for s in slices)
        assert ops.count("DequantizeLinear") == 3
    else:  # a's two halves are dequantised after the slices (the same values, once each)
        assert all(producers[s.input[0]].op_type == "QuantizeLinear" for s in slices)
        assert ops.count("DequantizeLinear") == 4
    for got, want in zip(_run(model, feeds), expected):
        np.testing.assert_array_equal(got, want)
