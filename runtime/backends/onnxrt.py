"""ONNX Runtime sessions tuned for latency."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import FommError

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def session_from_onnx(path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Args:
        providers: short names in priority order: ``cpu``, ``cuda``, ``tensorrt``.
        threads: intra-op threads; default the number of cores. Spinning is off, so the keypoint detector
            and generator sessions that alternate do not fight for the cores.
    Raises:
        FommError: onnxruntime missing, unknown provider, or a provider not in this onnxruntime build.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise FommError("onnxruntime is not installed: pip install 'fomm-deploy[cpu]' (or [gpu])") from None
    names = []
    available = set(ort.get_available_providers())
    for p in providers:
        if p not in _PROVIDERS:
            raise FommError(f"unknown ONNX Runtime provider '{p}'; choose from {', '.join(_PROVIDERS)}")
        if _PROVIDERS[p] not in available:
            raise FommError(f"ONNX Runtime provider '{p}' is not available in this onnxruntime build "
                            f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu for cuda/tensorrt")
        names.append(_PROVIDERS[p])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=names)
