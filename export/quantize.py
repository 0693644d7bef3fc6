"""int8 graphs for ONNX Runtime on CPU: static QDQ quantisation of the convolutional blocks.

Only ``Conv`` nodes inside the heavy scopes (the same ones that run in fp16, see ``fp16.py``) are
quantised, minus the source encoder (once per source, see ``_encodes_the_source``) and the head
convolutions that feed a softmax, sigmoid or exp (directly, or through the row sums of
``narrow_heads.py``); the keypoint heads, heatmaps, softmax, the 2x2 inverse, grid coordinates and
GridSample stay float32. Activations are calibrated on real frames (the caller passes them), weights
are per-channel int8, activations uint8. Inputs and outputs stay float32, so the graph contract is unchanged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from .fp16 import FP16_SCOPES
from .narrow_heads import ROW_CONV_SCOPE


# A quantised Conv also gets its output quantised (so ONNX Runtime can fuse it into QLinearConv); the head
# convolutions that feed these ops stay float32, so logits, masks and sampled features are never rounded
# to 256 levels.
_FLOAT_CONSUMERS = {"Softmax", "Sigmoid", "Exp", "GridSample"}


def _encodes_the_source(name: str) -> bool:
    """The generator's source encoder (``first`` and its ``down_blocks``, not the dense-motion hourglass's).

    It runs once per source, so int8 buys no per-frame time there, and quantising it cost most of the
    int8 quality: on the bundled synthetic-faces model (ONNX Runtime CPU, AMD EPYC Zen 4) the int8
    generator measured 29.7 dB PSNR against fp32 with a quantised encoder and 45 dB without.
    """
    return "/first/" in name or ("/down_blocks." in name and "/hourglass/" not in name)


def int8_node_names(model: onnx.ModelProto) -> list[str]:
    """The nodes to quantise: the Conv nodes of the convolutional feature extraction (not the heads), and
    each ReLU that is the only reader of such a Conv's output.

    A listed ReLU is removed by the quantiser (``QDQRemovableActivation``, with asymmetric activations): its
    Conv's output is quantised once with the ReLU's range, whose zero point is 0, so ``QuantizeLinear``'s
    saturation is the ReLU, and ONNX Runtime runs Conv -> Conv as QLinearConv -> QLinearConv. Left in
    float, the ReLU cost a dequantise, a float ReLU and a quantise of the full tensor, and a second rounding.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in model.graph.node
             if n.op_type == "Conv" and any(s in n.name for s in FP16_SCOPES) and not _encodes_the_source(n.name)
             and ROW_CONV_SCOPE not in n.name
             and not any(c.op_type in _FLOAT_CONSUMERS for c in consumers.get(n.output[0], []))]
    relus = [readers[0] for readers in (consumers.get(c.output[0], []) for c in convs)
             if len(readers) == 1 and readers[0].op_type == "Relu"]
    return [n.name for n in convs + relus]


def quantize_int8(model_path: Path, out_path: Path, calibration: Iterable[dict[str, np.ndarray]]) -> Path:
    """Write an int8 (QDQ) version of ``model_path`` to ``out_path``.

    Args:
        calibration: feeds (graph input name -> float32 array) of real data, one per calibration step.
    Raises:
        ValueError: nothing to quantise (the scopes do not match this graph).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(model_path))
    nodes = int8_node_names(model)
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
    return out_path
