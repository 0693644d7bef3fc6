"""Mixed-precision ONNX graphs: fp16 inside the heavy convolutional blocks, fp32 everywhere else.

TensorRT 11 has no fp16 builder flag: precision must live in the graph. This pass converts the nodes
chosen by a predicate to fp16 and inserts Cast nodes only where a tensor crosses between precisions, so
graph inputs and outputs keep their types (float32; ``frame_step``'s frames stay uint8: only float tensors
are converted) and the numerically sensitive parts (keypoint softmax and coordinate reduction, the 2x2
inverse, grid coordinates, GridSample) stay float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fomm_deploy.runtime.core.precision import FP16_OPS, in_fp16_scope, runs_fp16, runs_in_fp16

# Inputs that must keep their float32 type whatever the node's precision (Resize's roi and scales).
_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2)}
# Ops that move or select values without arithmetic: they run in whatever type their data input has. A node
# of these types outside the scopes is carried into fp16 when all its float data inputs are already fp16, so
# Cast nodes appear only where the arithmetic changes precision (the subpixel up blocks' interleave, the
# keypoint-independent reshapes). Shape reads no values: it never needs its input cast.
TYPE_AGNOSTIC_OPS = {"Reshape", "Transpose", "Concat", "Slice", "Split", "Identity", "Pad", "Squeeze", "Unsqueeze",
                     "Flatten", "Expand", "Gather", "Tile", "Shape", "MaxPool"}


def default_fp16_predicate(node: onnx.NodeProto) -> bool:
    return node.op_type in FP16_OPS and in_fp16_scope(node.name)


def mixed_fp16_for_graph(graph: str, model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 deployment's graph ``graph``: :func:`convert_to_mixed_fp16` of the nodes the precision policy
    runs in half (``precision.runs_in_fp16``: in a composite graph only those of its fp16 parts), or an fp32
    copy for the graphs the policy keeps in fp32 (``precision.FP32_AT_FP16``)."""
    if not runs_fp16(graph):
        return onnx.ModelProto.FromString(model.SerializeToString())
    return convert_to_mixed_fp16(model, lambda node: node.op_type in FP16_OPS and runs_in_fp16(graph, node.name))


def _resolve_identities(graph: onnx.GraphProto) -> None:
    """Point consumers of ``Identity(initializer)`` at the initializer itself (the TorchScript exporter shares
    batch-norm parameters that way); the Identity nodes are dropped unless they produce a graph output."""
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits
             and n.output[0] not in outputs}
    if not alias:
        return
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, inp in enumerate(node.input):
            if inp in alias:
                node.input[i] = alias[inp]
    del graph.node[:]
    graph.node.extend(kept)


def _carry_through_agnostic_ops(graph: onnx.GraphProto, fp16_nodes: set[int], floats: set[str]) -> set[int]:
    """``fp16_nodes`` plus the type-agnostic nodes whose float data inputs are all fp16 (in graph order)."""
    half: set[str] = set()
    inits = {i.name for i in graph.initializer}
    chosen = set(fp16_nodes)
    for index, node in enumerate(graph.node):
        if index not in chosen and node.op_type in TYPE_AGNOSTIC_OPS:
            data = [inp for i, inp in enumerate(node.input) if inp and inp in floats and inp not in inits
                    and not (node.op_type == "Pad" and i == 2)]
            if data and all(inp in half for inp in data):
                chosen.add(index)
        if index in chosen:
            half.update(o for o in node.output if o in floats)
    return chosen


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    names = set()
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            names.add(vi.name)
    names.update(i.name for i in g.initializer if i.data_type == TensorProto.FLOAT)
    for node in g.node:  # Constant outputs are not always in value_info
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    names.add(node.output[0])
    return names


def convert_to_mixed_fp16(model: onnx.ModelProto,
                          predicate: Callable[[onnx.NodeProto], bool] = default_fp16_predicate) -> onnx.ModelProto:
    """Return a copy of ``model`` whose selected nodes compute in fp16; I/O types are unchanged.

    Raises:
        ValueError: no node was selected (the scopes do not match this graph: a torch naming change?).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    _resolve_identities(graph)
    floats = _float_tensors(model)
    initializers = {i.name: i for i in graph.initializer}
    # Node positions (protobuf wrappers are recreated on every access, so id() cannot identify them).
    fp16_nodes = {i for i, n in enumerate(graph.node) if predicate(n)}
    if not fp16_nodes:
        raise ValueError("no node matched the fp16 scopes; the exporter's node naming may have changed")
    fp16_nodes = _carry_through_agnostic_ops(graph, fp16_nodes, floats)

    fp16_tensors: set[str] = set()  # tensors that are fp16 after conversion
    new_inits: list[TensorProto] = []
    half_init: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__as_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__cast"))
            casts[key] = out
        return casts[key]

    # Graph outputs produced by fp16 nodes get renamed inside, then cast back under their public name.
    outputs = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        if index in fp16_nodes:
            for i, out in enumerate(node.output):
                if out in outputs and out in floats:
                    renamed[out] = out + "__fp16_result"
                    node.output[i] = renamed[out]
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp in renamed:
                node.input[i] = renamed[inp]
    floats.update(renamed.values())

    for index, node in enumerate(graph.node):
        is_half = index in fp16_nodes
        for i, inp in enumerate(node.input):
            if not inp or inp not in floats:
                continue
            want_half = is_half and (node.op_type, i) not in _KEEP_FP32_INPUTS
            have_half = inp in fp16_tensors
            if want_half and not have_half:
                if inp in initializers:
                    if inp not in half_init:
                        arr = numpy_helper.to_array(initializers[inp]).astype(np.float16)
                        half_init[inp] = inp + "__fp16"
                        new_inits.append(numpy_helper.from_array(arr, half_init[inp]))
                    node.input[i] = half_init[inp]
                else:
                    node.input[i] = cast(inp, TensorProto.FLOAT16)
            elif have_half and not want_half:
                node.input[i] = cast(inp, TensorProto.FLOAT)
        if is_half:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            fp16_tensors.update(o for o in node.output if o in floats)
        new_nodes.append(node)
    for public, inner in renamed.items():
        new_nodes.append(helper.make_node("Cast", [inner], [public], to=TensorProto.FLOAT, name=f"{public}__cast"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale types; consumers re-infer
    return model


def fp16_node_types(model: onnx.ModelProto) -> dict[str, set[str]]:
    """For checks: op types grouped by the precision of their first float input ('fp16' or 'fp32')."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    out: dict[str, set[str]] = {"fp16": set(), "fp32": set()}
    for node in inferred.graph.node:
        for inp in node.input:
            t = types.get(inp)
            if t in (TensorProto.FLOAT, TensorProto.FLOAT16):
                out["fp16" if t == TensorProto.FLOAT16 else "fp32"].add(node.op_type)
                break
    return out

