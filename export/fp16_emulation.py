"""What an fp16 graph computes on hardware that really does fp16 arithmetic, emulated on the CPU.

ONNX Runtime's CPU provider runs the fp16 regions of ``*.fp16.onnx`` through fp32 kernels, so measuring a
graph there only sees the rounding of weights and region boundaries. This module runs the graph node by
node and rounds every tensor that the fp16 graph types as float16 after each node, in two modes:

``best``
    Each op computes in fp32 from its (fp16) inputs and its outputs are rounded to fp16 once: what fp16
    kernels with fp32 accumulation (tensor cores with an fp32 accumulator) give.
``worst``
    As ``best``, but convolutions, matrix products and average pools accumulate in fp16. A convolution's
    reduction is split by input channel: each channel's kh x kw taps form one fp32 partial sum, and the
    partials are added one channel after another with the running sum rounded to fp16 after every addition
    (the bias added last, also rounded). MatMul and AveragePool round after every single multiply-add.
    fp16-accumulating GPU kernels sum blocks of the reduction with wider internal sums, so this sequential
    order is a pessimistic bound: errors grow with the number of rounded additions (C_in per output).

Convolutions, GridSample, Resize and pools run in torch (fp32, CPU); every other op runs in onnx's
reference implementation (``onnx.reference``), one node at a time, in fp32. Nodes are evaluated in graph
order (the exporter's graphs are topologically sorted).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

MODES = ("best", "worst")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _round16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16)


def _t(x: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(np.asarray(x, np.float32))
    with warnings.catch_warnings():
        # The graph's initializers come from onnx's numpy_helper as read-only arrays, and torch warns once per
        # process that it cannot protect them (a UserWarning printed on every fp16 export). The emulation only
        # reads these tensors (every op here makes a new one), so the warning is filtered here, and only here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


def _conv(x, w, b, attrs, worst: bool) -> np.ndarray:
    kh, kw = w.shape[2:]
    pads = attrs.get("pads", [0, 0, 0, 0])
    strides, dil, groups = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("group", 1)
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError("Conv auto_pad SAME_* is not emulated")
    xt = _t(x)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        xt = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
        pad = (0, 0)
    else:
        pad = (pads[0], pads[1])
    if not worst or groups != 1:
        y = F.conv2d(xt, _t(w), None if b is None else _t(b), stride=strides, padding=pad, dilation=dil,
                     groups=groups)
        return y.numpy()
    wt, acc = _t(w), None
    cout, cin = w.shape[:2]
    # Per-channel partials, several channels per grouped convolution (group g = input channel c0 + g, all outputs)
    chunk = max(1, min(cin, (1 << 25) // max(1, xt.shape[0] * cout * xt.shape[2] * xt.shape[3])))
    for c0 in range(0, cin, chunk):
        c1 = min(cin, c0 + chunk)
        kernels = wt[:, c0:c1].transpose(0, 1).reshape((c1 - c0) * cout, 1, kh, kw)
        parts = F.conv2d(xt[:, c0:c1], kernels, None, stride=strides, padding=pad, dilation=dil, groups=c1 - c0)
        parts = parts.reshape(xt.shape[0], c1 - c0, cout, *parts.shape[2:])
        for g in range(c1 - c0):  # one input channel's kh x kw taps per fp32 partial, summed across channels in fp16
            acc = parts[:, g].half().float() if acc is None else (acc + parts[:, g]).half().float()
    if b is not None:
        acc = (acc + _t(b)[None, :, None, None]).half().float()
    return acc.numpy()


def _average_pool(x, attrs, worst: bool) -> np.ndarray:
    k, s = attrs["kernel_shape"], attrs.get("strides", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3] or attrs.get("ceil_mode", 0):
        raise NotImplementedError("AveragePool with asymmetric pads or ceil_mode is not emulated")
    if any(pads) and not attrs.get("count_include_pad", 0):
        raise NotImplementedError("AveragePool excluding pads is not emulated")
    xt = _t(x)
    if not worst:
        return F.avg_pool2d(xt, k, s, (pads[0], pads[1]), count_include_pad=True).numpy()
    xt = F.pad(xt, (pads[1], pads[1], pads[0], pads[0])) if any(pads) else xt
    h_out = (xt.shape[2] - k[0]) // s[0] + 1
    w_out = (xt.shape[3] - k[1]) // s[1] + 1
    acc = None
    for dy in range(k[0]):  # the window's elements one at a time, the running sum rounded to fp16
        for dx in range(k[1]):
            tap = xt[:, :, dy:dy + s[0] * (h_out - 1) + 1:s[0], dx:dx + s[1] * (w_out - 1) + 1:s[1]]
            acc = tap.half().float() if acc is None else (acc + tap).half().float()
    return (acc / (k[0] * k[1])).half().float().numpy()


def _matmul(a, b, worst: bool) -> np.ndarray:
    if not worst:
        return np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32))
    at, bt = _t(a), _t(b)
    shape = torch.broadcast_shapes(at.shape[:-2], bt.shape[:-2])
    at = at.expand(*shape, *at.shape[-2:]).reshape(-1, *at.shape[-2:])
    bt = bt.expand(*shape, *bt.shape[-2:]).reshape(-1, *bt.shape[-2:])
    acc = torch.zeros(at.shape[0], at.shape[1], bt.shape[2])
    for i in range(at.shape[2]):
        acc = (acc + at[:, :, i, None] * bt[:, None, i, :]).half().float()
    return acc.reshape(*shape, acc.shape[-2], acc.shape[-1]).numpy()


def _grid_sample(x, grid, attrs) -> np.ndarray:
    mode = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}[attrs.get("mode", "bilinear")]
    return F.grid_sample(_t(x), _t(grid), mode=mode, padding_mode=attrs.get("padding_mode", "zeros"),
                         align_corners=bool(attrs.get("align_corners", 0))).numpy()


def _resize(x, scales, sizes, attrs) -> np.ndarray | None:
    """Resize nearest (asymmetric / floor) and integer upscales: what ``F.interpolate(scale_factor=2)`` exports."""
    if attrs.get("mode", "nearest") != "nearest" or attrs.get("coordinate_transformation_mode") != "asymmetric" \
            or attrs.get("nearest_mode", "round_prefer_floor") != "floor":
        return None
    if sizes is not None and np.size(sizes):
        out = [int(s) for s in sizes]
    else:
        out = [int(np.floor(d * s)) for d, s in zip(x.shape, scales)]
    if out[:2] != list(x.shape[:2]):
        return None
    return F.interpolate(_t(x), size=out[2:], mode="nearest").numpy()


class Fp16Emulator:
    """Runs one (fp16 or fp32) ONNX graph node by node with fp16 rounding of fp16-typed tensors."""

    def __init__(self, model: onnx.ModelProto, mode: str = "best") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown emulation mode '{mode}'; choose from {', '.join(MODES)}")
        self.mode = mode
        self.model = model
        inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
        self.values: dict[str, np.ndarray] = {}
        for init in model.graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
            self.types[init.name] = init.data_type
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 16)
        self._reference: dict[int, ReferenceEvaluator] = {}
        self.fp16_nodes = 0

    def _half_typed(self, name: str, value: np.ndarray) -> bool:
        t = self.types.get(name)
        return t == TensorProto.FLOAT16 if t is not None else value.dtype == np.float16

    def _reference_run(self, index: int, node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
        if index not in self._reference:
            names = [f"in{i}" if x else "" for i, x in enumerate(node.input)]
            single = helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))],
                                      domain=node.domain)
            single.attribute.extend(node.attribute)
            graph = helper.make_graph([single], "one", [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                                                        for n in names if n],
                                      [helper.make_tensor_value_info(f"out{i}", TensorProto.UNDEFINED, None)
                                       for i in range(len(node.output))])
            m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
            self._reference[index] = ReferenceEvaluator(m)
        feed = {f"in{i}": x for i, x in enumerate(inputs) if node.input[i]}
        return list(self._reference[index].run(None, feed))

    def _run_node(self, index: int, node: onnx.NodeProto, inputs: list[np.ndarray | None], half: bool):
        worst = half and self.mode == "worst"
        op, attrs = node.op_type, _attrs(node)
        if op == "Conv":
            return [_conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs, worst)]
        if op == "AveragePool":
            return [_average_pool(inputs[0], attrs, worst)]
        if op == "MatMul":
            return [_matmul(inputs[0], inputs[1], worst)]
        if op == "GridSample":
            return [_grid_sample(inputs[0], inputs[1], attrs)]
        if op == "Resize":
            out = _resize(inputs[0], inputs[2] if len(inputs) > 2 else None, inputs[3] if len(inputs) > 3 else None,
                          attrs)
            if out is not None:
                return [out]
        if op == "Cast":
            return [np.asarray(inputs[0]).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]
        return self._reference_run(index, node, inputs)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(self.values)
        values.update({k: np.asarray(v) for k, v in feed.items()})
        self.fp16_nodes = 0
        for index, node in enumerate(self.model.graph.node):
            raw = [values[n] if n else None for n in node.input]
            half = any(x is not None and self._half_typed(n, x) for n, x in zip(node.input, raw))
            # Compute in fp32 from the (already fp16-rounded) values; integer tensors pass unchanged.
            args = [x.astype(np.float32) if x is not None and x.dtype == np.float16 else x for x in raw]
            outs = self._run_node(index, node, args, half and node.op_type != "Cast")
            self.fp16_nodes += half
            for name, out in zip(node.output, outs):
                out = np.asarray(out)
                wanted = self.types.get(name)
                if node.op_type == "Cast":
                    pass
                elif wanted == TensorProto.FLOAT16 or (wanted is None and half and out.dtype == np.float32):
                    out = _round16(out)
                elif out.dtype == np.float64 or (wanted == TensorProto.FLOAT and out.dtype != np.float32):
                    out = out.astype(np.float32)
                values[name] = out
        return {o.name: np.asarray(values[o.name], np.float32) for o in self.model.graph.output}


def emulate(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]], mode: str) -> dict[str, np.ndarray]:
    """Run ``model`` on each feed with :class:`Fp16Emulator` in ``mode``; outputs concatenated over the feeds."""
    emulator = Fp16Emulator(model, mode)
    runs = [emulator.run(f) for f in feeds]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
