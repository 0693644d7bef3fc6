"""ONNX Runtime: sessions tuned for latency, and the ONNX Runtime backend."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.contract import GraphSpec
from ..core.errors import BackendUnavailableError, ContractError, ExportFolderError, InputError
from ..core.fileio import sha256_file
from ..core.names import ORT_PROVIDERS as _PROVIDERS
from .base import Backend
from .tensorrt import engine_cache_dir

# Batch sizes the TensorRT execution provider's engine covers (min, opt, max): one engine for 1..8 frames
# instead of one per batch size seen.
TRT_EP_BATCH = (1, 1, 8)


def _profile_shapes(spec: GraphSpec, batch: int) -> str:
    """``name:1x3x256x256,other:1x10x2``: the TensorRT EP's ``trt_profile_*_shapes`` format (ONNX Runtime
    TensorRT EP docs, "Configurations")."""
    return ",".join(f"{t.name}:{'x'.join(str(d) for d in t.concrete_shape(batch))}" for t in spec.inputs)


def tensorrt_ep_options(spec: GraphSpec, onnx_path: str | Path, *, batch: tuple[int, int, int] = TRT_EP_BATCH,
                        cache_dir: str | Path | None = None) -> dict[str, object]:
    """Provider options for ONNX Runtime's TensorRT execution provider (onnxruntime.ai, TensorRT EP,
    "Configurations"): engines and timing caches kept on disk, and one explicit batch profile from the
    contract, so a session neither rebuilds its engines every time nor once per batch size.

    The cache folder is ``<export>/engines`` (the user cache when that is read-only), then ``ort-tensorrt``
    and the ONNX Runtime version and graph hash; ONNX Runtime's own engine file names carry the compute
    capability. ``trt_fp16_enable`` is deliberately absent: fp16 lives in ``*.fp16.onnx``, and the EP builds
    strongly typed networks only without it (microsoft/onnxruntime PR #24298).
    """
    import onnxruntime as ort


    onnx_path = Path(onnx_path)
    base = Path(cache_dir) if cache_dir else engine_cache_dir(onnx_path.parent, log=lambda _m: None)
    folder = base / "ort-tensorrt" / f"ort{ort.__version__}-{onnx_path.stem}-{sha256_file(onnx_path)[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    lo, opt, hi = batch
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        "trt_profile_min_shapes": _profile_shapes(spec, lo),
        "trt_profile_opt_shapes": _profile_shapes(spec, opt),
        "trt_profile_max_shapes": _profile_shapes(spec, hi),
    }


def check_providers(session, asked: Sequence[str], path: Path) -> None:
    """ONNX Runtime drops a provider that fails to load (missing CUDA, cuDNN or TensorRT libraries) and
    quietly runs on the rest. Compare what the session got with what was asked: raise when a provider went
    and CPU was not asked for; warn when CPU was asked for as the fallback and took over part of the work.

    Raises:
        BackendUnavailableError: an asked-for provider is not in ``session.get_providers()``, CPU not asked.
    """
    got = list(session.get_providers())
    dropped = [p for p in asked if p not in got]
    if not dropped:
        return
    short = {v: k for k, v in _PROVIDERS.items()}
    dropped_s = ", ".join(short.get(p, p) for p in dropped)
    got_s = ", ".join(short.get(p, p) for p in got) or "none"
    if "CPUExecutionProvider" in asked:
        warnings.warn(f"ONNX Runtime could not use {dropped_s} for {path.name} and runs it on {got_s} instead "
                      "(CPU was listed as the fallback); check the CUDA/cuDNN/TensorRT libraries",
                      RuntimeWarning, stacklevel=3)
        return
    raise BackendUnavailableError(f"ONNX Runtime could not use {dropped_s} for {path.name} (it would run on "
                                  f"{got_s}): the CUDA, cuDNN or TensorRT libraries it needs are missing or do not "
                                  "match this onnxruntime-gpu; add cpu to --providers to allow a CPU fallback")



def session_from_onnx(path: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                      provider_options: dict[str, dict] | None = None, profile_prefix: str | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``.

    Args:
        providers: short names in priority order: ``cpu``, ``cuda``, ``tensorrt``.
        threads: intra-op threads; default the number of cores. Spinning is off, so the keypoint detector
            and generator sessions that alternate do not fight for the cores.
        provider_options: per short name, e.g. ``{"tensorrt": {"trt_fp16_enable": True}}``.
        profile_prefix: turn on ONNX Runtime's profiler, writing ``<prefix>_<time>.json`` when the caller calls
            ``session.end_profiling()`` (``benchmarks/profile_graph.py``).
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
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=names, provider_options=options)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportFolderError(f"ONNX Runtime cannot load {path} ({str(exc).strip().splitlines()[0][:300]}); "
                               "the file is damaged or not an fomm-export graph: export again") from None
    check_providers(session, names, path)
    return session


def _trt_ep_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return _PROVIDERS["tensorrt"] in ort.get_available_providers()


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
        options = dict(self.provider_options or {})
        if "tensorrt" in self.providers and _trt_ep_available():  # the caller's own options win over ours
            options["tensorrt"] = {**tensorrt_ep_options(self.spec, self.onnx_path), **options.get("tensorrt", {})}
        self.session = session_from_onnx(self.onnx_path, self.providers, self.threads, options)
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if sorted(graph_inputs) != sorted(self.spec.input_names):
            raise ContractError(f"{self.onnx_path} has inputs {graph_inputs}, the contract says "
                            f"{self.spec.input_names}; re-export it with this version of fomm-export")
        # After a CPU fallback there is no GPU to bind outputs on.
        self._use_binding = self.session.get_providers()[0] != "CPUExecutionProvider"

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
