"""The PyTorch side of the export: the form of a module that is traced, the trace into an ONNX graph, and the
reference outputs each graph is checked against.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from fomm_deploy.runtime.core.contract import OPSET, GraphSpec

from .checks import stamp_io_shapes
from .narrow_heads import with_row_sum_heads
from .subpixel import with_subpixel_upsampling


def export_form(module: torch.nn.Module) -> torch.nn.Module:
    """The form of ``module`` that is traced: the same function, computed the way ONNX Runtime runs fastest.

    A copy whose up blocks are computed at low resolution (``subpixel.py``) and whose narrow head
    convolutions are row sums (``narrow_heads.py``); the exporter checks each graph against ``module`` itself.
    """
    return with_row_sum_heads(with_subpixel_upsampling(module))


def export_graph(module: torch.nn.Module, spec: GraphSpec, feed: dict[str, np.ndarray], path: Path) -> onnx.ModelProto:
    """Trace ``module`` with the TorchScript exporter at opset 16 and stamp the contract's I/O shapes.

    The dynamo exporter (torch 2.13) emits opset 18+ and cannot convert this model down to 16 (no Pad
    adapter), so the TorchScript exporter is used; its deprecation warning is expected.
    """
    args = tuple(torch.from_numpy(feed[n]) for n in spec.input_names)
    dynamic = {n: {0: "B"} for n in spec.input_names + spec.output_names}
    tmp = path.with_suffix(".trace.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=OPSET, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=dynamic, do_constant_folding=True)
    model = onnx.load(str(tmp))
    tmp.unlink()
    stamp_io_shapes(model, spec)
    onnx.checker.check_model(model)
    return model


def torch_outputs(module: torch.nn.Module, spec: GraphSpec, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(feed[n]) for n in spec.input_names])
    out = out if isinstance(out, tuple) else (out,)
    return {n: o.numpy() for n, o in zip(spec.output_names, out)}
