"""Contract checks on an exported ONNX graph: what TensorRT's ONNX parser and our runtime rely on.

Run on every export; a failure stops it (and leaves no graphs behind). They catch a future torch that
exports another opset, a GridSample mode TensorRT misreads, ORT-only contrib ops, or I/O drift.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from fomm_deploy.runtime.core.contract import OPSET, GraphSpec
from fomm_deploy.runtime.core.errors import ContractError

# Operators of the standard domain that TensorRT's ONNX parser (onnx-tensorrt, TensorRT 10/11) supports
# and that an FOMM export may reasonably produce. Anything else fails the export loudly. Source: onnx-tensorrt's
# docs/operators.md (TensorRT 10): e.g. Round (FP32, FP16), and UINT8 only as a network input or output type,
# which is how frame_step uses it (Cast at its two ends).
TRT_SUPPORTED_OPS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "DequantizeLinear", "Div", "Equal", "Exp", "Expand", "Flatten",
    "Floor", "Gather", "Gemm", "Greater", "GridSample", "Identity", "InstanceNormalization", "LeakyRelu", "Less",
    "MatMul", "Max", "Min", "Mul", "Neg", "Not", "Pad", "Pow", "QuantizeLinear", "Range", "Reciprocal",
    "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Round", "Shape", "Sigmoid", "Slice",
    "Softmax",
    "Split", "Sqrt", "Squeeze", "Sub", "Tile", "Transpose", "Unsqueeze", "Where",
})
_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.INT64: "int64",
           TensorProto.UINT8: "uint8"}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _io_problems(kind: str, values, specs) -> list[str]:
    problems = []
    names = [v.name for v in values]
    if names != [s.name for s in specs]:
        return [f"{kind} names {names} differ from the contract {[s.name for s in specs]}"]
    for v, s in zip(values, specs):
        dtype = _DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))
        if dtype != s.dtype:
            problems.append(f"{kind} '{v.name}' has dtype {dtype}, contract says {s.dtype}")
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        if [str(d) for d in dims] != [str(d) for d in s.shape]:
            problems.append(f"{kind} '{v.name}' has shape {dims}, contract says {list(s.shape)}")
    return problems


def check_graph(model: onnx.ModelProto, spec: GraphSpec, *, align_corners: bool) -> None:
    """Check one exported graph against the contract.

    Raises:
        ContractError: listing every problem found.
    """
    problems: list[str] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != OPSET:
        problems.append(f"opset {opsets.get('ai.onnx')} (expected {OPSET})")
    foreign = sorted(d for d in opsets if d not in ("ai.onnx",))
    if foreign:
        problems.append(f"non-standard operator domains {foreign} (e.g. com.microsoft ops run only in ONNX Runtime)")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name} uses {node.domain}::{node.op_type}")
        elif node.op_type == "Inverse":
            problems.append(f"node {node.name} is a matrix Inverse (no ONNX/TensorRT kernel; use the closed form)")
        elif node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"node {node.name} has op type {node.op_type}, outside the TensorRT-supported set")
        if node.op_type == "GridSample":
            mode = _attr(node, "mode", "bilinear")
            if mode != "bilinear":
                problems.append(f"GridSample {node.name} has mode '{mode}' (TensorRT needs 'bilinear' at opset 16)")
            ac = _attr(node, "align_corners", 0)
            if bool(ac) != align_corners:
                problems.append(f"GridSample {node.name} has align_corners={ac}, the config says {int(align_corners)}")
            if _attr(node, "padding_mode", "zeros") != "zeros":
                problems.append(f"GridSample {node.name} has padding_mode '{_attr(node, 'padding_mode')}', not zeros")
    problems += _io_problems("input", model.graph.input, spec.inputs)
    problems += _io_problems("output", model.graph.output, spec.outputs)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ContractError(f"{spec.name}: graph breaks the contract: " + "; ".join(problems[:5]) + more)


def stamp_io_shapes(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Write the contract's shapes on the graph's inputs and outputs (the tracer mislabels some dims)."""
    for values, specs in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        for v, s in zip(values, specs):
            shape = v.type.tensor_type.shape
            del shape.dim[:]
            for d in s.shape:
                dim = shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = int(d)
