"""What the int8 quantiser quantises, and what ONNX Runtime then runs, on a graph of the shape FOMM's blocks have."""

from __future__ import annotations

import numpy as np
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
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
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
