"""int8 graphs for ONNX Runtime on CPU: static QDQ quantisation of the convolutional blocks.

Only ``Conv`` nodes inside the heavy scopes (the same ones that run in fp16, see ``fp16.py``) are
quantised, minus the source encoder (once per source, see ``_encodes_the_source``) and the head
convolutions that feed a softmax, sigmoid or exp (directly, or through the row sums of
``narrow_heads.py``); the keypoint heads, heatmaps, softmax, the 2x2 inverse, grid coordinates and
GridSample stay float32. Activations are calibrated on real frames (the caller passes them), weights
are per-channel int8, activations uint8. Inputs and outputs keep their types, so the graph contract is unchanged.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fomm_deploy.runtime.core.precision import in_fp16_scope, quantised_at_int8

from .narrow_heads import ROW_CONV_SCOPE


# A quantised Conv also gets its output quantised (so ONNX Runtime can fuse it into QLinearConv); the head
# convolutions that feed these ops stay float32, so logits, masks and sampled features are never rounded
# to 256 levels.
_FLOAT_CONSUMERS = {"Softmax", "Sigmoid", "Exp", "GridSample"}

# Operators that only move values: each output element is some input element. Per-tensor dequantisation
# commutes with them, so they can run on the uint8 tensor. The value lists the data inputs (None: all of
# them, for Concat); other inputs are parameters (starts, shapes, axes).
_MOVERS: dict[str, tuple[int, ...] | None] = {
    "Slice": (0,), "Split": (0,), "Reshape": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Transpose": (0,),
    "Flatten": (0,), "Concat": None}


def _encodes_the_source(name: str) -> bool:
    """The generator's source encoder (``first`` and its ``down_blocks``, not the dense-motion hourglass's).

    It runs once per source, so int8 buys no per-frame time there, and quantising it cost most of the
    int8 quality on the bundled model (``docs/export.md``).
    """
    return "/first/" in name or ("/down_blocks." in name and "/hourglass/" not in name)


def int8_node_names(model: onnx.ModelProto, graph: str = "") -> list[str]:
    """The nodes to quantise: the Conv nodes of the convolutional feature extraction (not the heads), and
    each ReLU that is the only reader of such a Conv's output.

    A listed ReLU is removed by the quantiser (``QDQRemovableActivation``, with asymmetric activations): its
    Conv's output is quantised once with the ReLU's range, whose zero point is 0, so ``QuantizeLinear``'s
    saturation is the ReLU, and ONNX Runtime runs Conv -> Conv as QLinearConv -> QLinearConv. Left in
    float, the ReLU cost a dequantise, a float ReLU and a quantise of the full tensor, and a second rounding.
    In a composite graph (``graph``, e.g. ``frame_step``) only the parts that int8 does not keep in fp32 count
    (``precision.quantised_at_int8``).
    """
    consumers = _readers(model.graph)
    convs = [n for n in model.graph.node
             if n.op_type == "Conv" and in_fp16_scope(n.name) and not _encodes_the_source(n.name)
             and (not graph or quantised_at_int8(graph, n.name))
             and ROW_CONV_SCOPE not in n.name
             and not any(c.op_type in _FLOAT_CONSUMERS for c in consumers.get(n.output[0], []))]
    relus = [readers[0] for readers in (consumers.get(c.output[0], []) for c in convs)
             if len(readers) == 1 and readers[0].op_type == "Relu"]
    return [n.name for n in convs + relus]


def quantize_int8(model_path: Path, out_path: Path, calibration: Iterable[dict[str, np.ndarray]],
                  graph: str = "") -> Path:
    """Write an int8 (QDQ) version of ``model_path`` to ``out_path``.

    Args:
        calibration: feeds (graph input name -> array) of real data, one per calibration step.
        graph: the contract's name of the graph (decides which parts of a composite graph are quantised).
    Raises:
        ValueError: nothing to quantise (the scopes do not match this graph).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(model_path))
    nodes = int8_node_names(model, graph)
    if not nodes:
        raise ValueError(f"{model_path.name}: no Conv node in the quantisable scopes")
    feeds = list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and ONNX Runtime's own graph optimisations (which renames nothing we rely on).
        quant_pre_process(str(model_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    model = onnx.load(str(out_path))
    if sink_dequantize(model):
        onnx.save(model, str(out_path))
    return out_path


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it (an empty list for a tensor nothing reads)."""
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    return readers


def _data_inputs(node: onnx.NodeProto) -> list[int]:
    """The positions of a mover's inputs whose values it moves (not its starts, shapes or axes)."""
    idx = _MOVERS[node.op_type]
    return list(range(len(node.input))) if idx is None else [i for i in idx if i < len(node.input)]


def _per_tensor(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple | None:
    """A QuantizeLinear / DequantizeLinear's (scale, zero point), exactly, if both are constant scalars."""
    if len(node.input) < 3 or node.input[1] not in consts or node.input[2] not in consts:
        return None
    scale, zero = consts[node.input[1]], consts[node.input[2]]
    if scale.size != 1 or zero.size != 1:
        return None
    return scale.dtype.str, scale.tobytes(), zero.dtype.str, zero.tobytes()


def sink_dequantize(model: onnx.ModelProto) -> int:
    """Run pure data movement on uint8: move per-tensor ``DequantizeLinear`` nodes below the ``_MOVERS`` that
    read them, then drop each ``DequantizeLinear -> QuantizeLinear`` pair with the same parameters. Exact.

    The up blocks' interleave (``subpixel.py``) slices, stacks and reshapes a quantised convolution's
    output. The quantiser leaves it float: ONNX Runtime dequantised each slice, concatenated float32
    (four times the bytes of uint8) and quantised the result again for the next convolution. A
    ``DequantizeLinear`` moves only if every reader of it is a mover (or a ``Shape``, which reads no values)
    and each ``Concat`` it feeds gets all of its inputs dequantised with the same parameters, so no
    tensor is ever dequantised twice. Returns the number of nodes changed.
    """
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    changed = 0
    while True:
        readers = _readers(graph)
        dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"
              and n.output[0] not in outputs and _per_tensor(n, consts)}

        def can_sink(t: str, sinkable: set[str]) -> bool:
            for r in readers[t]:
                if r.op_type == "Shape":
                    continue
                if r.op_type not in _MOVERS:
                    return False
                data = _data_inputs(r)
                if any(x == t for i, x in enumerate(r.input) if i not in data):
                    return False
                if _MOVERS[r.op_type] is None and not all(
                        r.input[i] in sinkable and _per_tensor(dq[r.input[i]], consts) == _per_tensor(dq[t], consts)
                        for i in data):
                    return False
            return True

        sinkable = set(dq)
        while True:
            keep = {t for t in sinkable if can_sink(t, sinkable)}
            if keep == sinkable:
                break
            sinkable = keep
        if not sinkable:
            break
        nodes = []
        for n in graph.node:
            if n.op_type == "DequantizeLinear" and n.output[0] in sinkable:
                continue
            read = [i for i, x in enumerate(n.input) if x in sinkable]
            if not read:
                nodes.append(n)
                continue
            source = dq[n.input[read[0]]]
            for i in read:
                n.input[i] = dq[n.input[i]].input[0]
            nodes.append(n)
            changed += 1
            if n.op_type == "Shape":
                continue
            for j, out in enumerate(n.output):
                n.output[j] = f"{out}_quantized"
                again = helper.make_node("DequantizeLinear", [n.output[j], *source.input[1:]], [out],
                                         name=f"{n.name}/DequantizeLinear_{j}")
                again.attribute.extend(source.attribute)
                nodes.append(again)
        del graph.node[:]
        graph.node.extend(nodes)
    # DequantizeLinear -> QuantizeLinear with equal parameters gives back the uint8 tensor.
    producers = {o: n for n in graph.node for o in n.output}
    bypass = {}
    for n in graph.node:
        source = producers.get(n.input[0]) if n.op_type == "QuantizeLinear" else None
        if (source is not None and n.output[0] not in outputs
                and source.op_type == "DequantizeLinear" and _per_tensor(source, consts) is not None
                and _per_tensor(source, consts) == _per_tensor(n, consts)):
            bypass[n.output[0]] = source.input[0]
    if bypass:
        kept = [n for n in graph.node if not (n.op_type == "QuantizeLinear" and n.output[0] in bypass)]
        for n in kept:
            for i, x in enumerate(n.input):
                if x in bypass:
                    n.input[i] = bypass[x]
        read = {x for n in kept for x in n.input} | outputs
        kept = [n for n in kept if not (n.op_type == "DequantizeLinear" and n.output[0] not in read)]
        changed += len(bypass)
        del graph.node[:]
        graph.node.extend(kept)
    return changed
