"""ONNX Runtime: sessions tuned for latency, and the ONNX Runtime backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..contract import GraphSpec
from ..errors import BackendUnavailableError, ContractError, ExportFolderError, InputError
from ..names import ORT_PROVIDERS as _PROVIDERS
from .base import Backend



def session_from_onnx(path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                      provider_options: dict[str, dict] | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Args:
        providers: short names in priority order: ``cpu``, ``cuda``, ``tensorrt``.
        threads: intra-op threads; default the number of cores. Spinning is off, so the keypoint detector
            and generator sessions that alternate do not fight for the cores.
        provider_options: per short name, e.g. ``{"tensorrt": {"trt_fp16_enable": True}}``.
    Raises:
        FommError: onnxruntime missing, unknown provider, or a provider not in this onnxruntime build.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install 'fomm-deploy[cpu]' (or [gpu])") from None
    path = Path(path)
    if not path.is_file():
        raise ExportFolderError(f"ONNX graph not found: {path}; run fomm-export first")
    available = set(ort.get_available_providers())
    names, options = [], []
    for p in providers:
        if p not in _PROVIDERS:
            raise InputError(f"unknown ONNX Runtime provider '{p}'; choose from {', '.join(_PROVIDERS)}")
        if _PROVIDERS[p] not in available:
            raise BackendUnavailableError(f"ONNX Runtime provider '{p}' is not available in this onnxruntime build "
                            f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu for cuda/tensorrt")
        names.append(_PROVIDERS[p])
        options.append((provider_options or {}).get(p, {}))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=names, provider_options=options)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportFolderError(f"ONNX Runtime cannot load {path} ({str(exc).strip().splitlines()[0][:300]}); "
                               "the file is damaged or not an fomm-export graph: export again") from None


class OrtBackend(Backend):
    """ONNX Runtime. CPU by default; ``providers=("cuda", "cpu")`` or ``("tensorrt", "cuda", "cpu")`` with
    onnxruntime-gpu, where inputs are bound with I/O binding so outputs are fetched once per call."""

    kind = "onnxruntime"

    def __init__(self, spec: GraphSpec, onnx_path: str | Path, *, providers: Sequence[str] = ("cpu",),
                 threads: int | None = None, provider_options: dict[str, dict] | None = None,
                 name: str | None = None) -> None:
        super().__init__(spec, name=name)
        self.onnx_path = Path(onnx_path)
        self.providers = tuple(providers)
        self.threads = threads
        self.provider_options = provider_options
        self.session = None

    def _activate(self) -> None:
        self.session = session_from_onnx(self.onnx_path, self.providers, self.threads, self.provider_options)
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if sorted(graph_inputs) != sorted(self.spec.input_names):
            raise ContractError(f"{self.onnx_path} has inputs {graph_inputs}, the contract says "
                            f"{self.spec.input_names}; re-export it with this version of fomm-export")
        self._use_binding = self.providers[0] != "cpu"

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._use_binding:
            outs = self.session.run(self.spec.output_names, feed)
            return dict(zip(self.spec.output_names, outs))
        binding = self.session.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in self.spec.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.spec.output_names, binding.copy_outputs_to_cpu()))

    def _deactivate(self) -> None:
        self.session = None
