"""TensorRT 10/11: engines built from the exported graphs, cached safely, run with ``execute_async_v3``.

* fp32 engines come from ``<graph>.onnx``; fp16 engines from ``<graph>.fp16.onnx``, whose precision is in
  the graph (TensorRT 11 has no fp16 builder flag). Both are built strongly typed
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x; implied on 11.x), and fp32 engines with
  ``BuilderFlag.TF32`` cleared (TensorRT enables it by default, which runs fp32 convolutions in TF32).
* The engine cache key holds the ONNX file's sha256, the TensorRT version, the GPU name and compute
  capability, the precision, the batch profile, the builder settings and :data:`BUILDER_REVISION`; the key
  is part of the file name, so a stale engine (or one built before a builder fix) is never picked up. A
  missing engine is built once (under a lock) and written atomically, next to a timing cache whose file
  name carries the TensorRT version and the GPU. A read-only export folder sends new engines to the user
  cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``fomm-deploy/engines``).
* Runs on its own non-blocking stream with device and pinned host buffers for one batch size at a time,
  re-allocated whenever a call's batch size differs from the last one's (I/O dtypes read from the engine,
  output shapes checked against the contract), optional CUDA-graph capture of the whole step (cuda-python
  only; captured again after each re-allocation), and frees everything on ``deactivate``.

Written against the TensorRT Python API documented for 10.x/11.x (docs.nvidia.com/deeplearning/tensorrt,
Python API: Builder, IBuilderConfig, ICudaEngine, IExecutionContext); it has not been run on this project's
CI, which has neither TensorRT nor a GPU. tests/runtime/test_tensorrt.py checks this module's own logic
against a stand-in of that API; its GPU tests are marked ``tensorrt``/``gpu``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.contract import GraphSpec
from ..core.errors import BackendError, BackendUnavailableError, ContractError, ExportFolderError, InputError
from ..core.fileio import atomic_path, sha256_file, user_cache_dir
from ..core.manifest import engine_file_name, graph_file_name
from . import cuda as cuda_layer
from .base import Backend

WORKSPACE_BYTES = 4 << 30
# Bump whenever the way engines are built changes (flags, profiles, parser options): engines built before
# the change then have another key and are rebuilt instead of reused. 2: TF32 off for fp32, strongly typed.
BUILDER_REVISION = 2
DEFAULT_BATCH = (1, 1, 8)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two equal keys may share an engine; anything else may not."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    optimization_level: int = 3
    tf32: bool = False
    strongly_typed: bool = True
    workspace_bytes: int = WORKSPACE_BYTES
    builder_revision: int = BUILDER_REVISION

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


def builder_settings(precision: str) -> dict:
    """The builder settings an engine of ``precision`` is built with (all of them go into its key).

    TF32 stays TensorRT's default (on) only for fp16 engines, whose fp32 islands are already a precision
    trade; fp32 engines are the parity reference and run true fp32.
    """
    return {"tf32": precision != "fp32", "strongly_typed": True, "workspace_bytes": WORKSPACE_BYTES}


def onnx_file_for(onnx_dir: str | Path, graph: str, precision: str) -> Path:
    """The graph file an engine of ``precision`` is built from: ``<graph>.onnx`` or ``<graph>.fp16.onnx``."""
    if precision not in ("fp32", "fp16"):
        raise InputError(f"unknown precision '{precision}'; TensorRT engines are fp32 or fp16")
    path = Path(onnx_dir) / graph_file_name(graph, precision)
    if not path.is_file():
        hint = " (export with --precision fp16)" if precision == "fp16" else ""
        raise ExportFolderError(f"{path} not found{hint}")
    return path


def engine_key(onnx_path: Path, precision: str, *, tensorrt_version: str, gpu_name: str, compute_capability: str,
               batch: tuple[int, int, int] = DEFAULT_BATCH, optimization_level: int = 3) -> EngineKey:
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"batch profile must satisfy 1 <= min <= opt <= max, got {batch}")
    return EngineKey(sha256_file(onnx_path), tensorrt_version, gpu_name, compute_capability, precision, lo, opt, hi,
                     optimization_level, **builder_settings(precision))


def engine_path_for(cache_dir: str | Path, graph: str, key: EngineKey) -> Path:
    return Path(cache_dir) / engine_file_name(graph, key.precision, key.digest())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def timing_cache_path(cache_dir: str | Path, key: EngineKey) -> Path:
    """One timing cache per TensorRT version and GPU: a cache from another one does not load."""
    return Path(cache_dir) / (f"timing.trt{_slug(key.tensorrt_version)}.{_slug(key.gpu_name)}"
                              f".sm{_slug(key.compute_capability)}.cache")


def user_engine_cache() -> Path:
    """Where engines go when the export folder is read-only: ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    return user_cache_dir("engines")


def _can_write(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing). Tries it: permission bits lie to root
    and to read-only mounts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
        return True
    except OSError:
        return False


def engine_cache_dir(onnx_dir: str | Path, graph: str | None = None, key: EngineKey | None = None, *,
                     log=print) -> Path:
    """The engine folder for an export: ``<export>/engines`` if it already holds this engine or can be
    written, else the user cache (where an engine built earlier may already be).

    Raises:
        ExportFolderError: neither folder can be written.
    """
    preferred = Path(onnx_dir) / "engines"
    fallback = user_engine_cache()
    if graph is not None and key is not None:
        for folder in (preferred, fallback):
            if engine_path_for(folder, graph, key).is_file():
                return folder
    if _can_write(preferred):
        return preferred
    if _can_write(fallback):
        log(f"{preferred} cannot be written; TensorRT engines go to {fallback}")
        return fallback
    raise ExportFolderError(f"cannot write TensorRT engines to {preferred} nor to {fallback}; make one writable "
                            "or set XDG_CACHE_HOME")


def _require_tensorrt():
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or PyPI's stub failing to fetch the real wheel
        raise BackendUnavailableError("the TensorRT backend needs the 'tensorrt' package and an NVIDIA GPU: "
                                      "pip install 'fomm-deploy[gpu]'; or use --backend onnxruntime") from None
    return trt


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on ``path`` across processes (``fcntl`` on POSIX, ``msvcrt`` on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows
            fcntl = None
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        else:
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)
            else:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def _attach_timing_cache(trt, config, path: Path | None, log):
    """Give ``config`` a timing cache (loaded from ``path`` when it holds one for this TensorRT and GPU).

    ``IBuilderConfig.create_timing_cache`` may return None (``createTimingCache`` returns nullptr on
    failure, NvInfer.h) and ``set_timing_cache(cache, ignore_mismatch)`` returns False for a cache from
    another device or version; both only cost build time, so the build goes on without (or with a fresh)
    cache. Returns the cache in use, or None.
    """
    data = b""
    if path is not None and path.is_file():
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        log(f"timing cache {path.name} does not fit this TensorRT or GPU; starting a new one")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
    log("TensorRT gave no timing cache; building without one (slower build, same engine)")
    return None


def engine_from_onnx(onnx_path: Path, engine_path: Path, spec: GraphSpec, key: EngineKey, *,
                     timing_cache: Path | None = None, log=print) -> Path:
    """Build and serialise an engine (if ``engine_path`` does not exist yet), atomically."""
    trt = _require_tensorrt()
    with _lock(engine_path.with_suffix(".lock")):
        if engine_path.is_file():  # built by another process while we waited
            return engine_path
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if key.strongly_typed and _major(key.tensorrt_version) < 11:
            # NetworkDefinitionCreationFlag.STRONGLY_TYPED (TensorRT 10 Python API, Builder.create_network);
            # on 11.x networks are always strongly typed and the flag is deprecated.
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_bytes)
        config.builder_optimization_level = key.optimization_level
        if not key.tf32 and hasattr(trt.BuilderFlag, "TF32"):
            # BuilderFlag.TF32 is set by default (TensorRT Python API, IBuilderConfig / BuilderFlag docs).
            config.clear_flag(trt.BuilderFlag.TF32)
        cache = _attach_timing_cache(trt, config, timing_cache, log)
        profile = builder.create_optimization_profile()
        for t in spec.inputs:
            profile.set_shape(t.name, t.concrete_shape(key.min_batch), t.concrete_shape(key.opt_batch),
                              t.concrete_shape(key.max_batch))
        config.add_optimization_profile(profile)
        log(f"building TensorRT {key.precision} engine for {onnx_path.name} (once; cached as {engine_path.name})")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(bytes(serialized))
        with atomic_path(engine_path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(asdict(key), indent=2) + "\n")
        if timing_cache is not None and cache is not None:
            updated = config.get_timing_cache()
            if updated is not None:
                try:
                    with atomic_path(timing_cache) as tmp:
                        tmp.write_bytes(bytes(updated.serialize()))
                except OSError as exc:  # a timing cache is an optimisation: never fail a build for it
                    log(f"could not save the timing cache {timing_cache}: {exc}")
    return engine_path


class TrtBackend(Backend):
    """A TensorRT engine for one graph. ``TrtBackend.from_onnx`` finds or builds the engine first.

    ``infer`` returns the backend's own pinned host arrays, overwritten by the next call (copy to keep).
    """

    kind = "tensorrt"

    def __init__(self, spec: GraphSpec, engine_path: str | Path, *, cuda_graph: bool = False,
                 name: str | None = None, batch: tuple[int, int, int] | None = None) -> None:
        super().__init__(spec, name=name)
        self.engine_path = Path(engine_path)
        self.cuda_graph = cuda_graph
        self.batch_profile = batch
        self._cuda = None
        self._runtime = self._engine = self._context = None
        self._stream: int | None = None
        self._buffers: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._batch: int | None = None
        self._graph = self._graph_exec = None

    @classmethod
    def from_onnx(cls, spec: GraphSpec, onnx_dir: str | Path, precision: str = "fp16", *,
                  cache_dir: str | Path | None = None, batch: tuple[int, int, int] = DEFAULT_BATCH,
                  cuda_graph: bool = False, log=print) -> "TrtBackend":
        """Find the cached engine for this graph, GPU and TensorRT version, or build it once."""
        trt = _require_tensorrt()
        onnx_path = onnx_file_for(onnx_dir, spec.name, precision)
        gpu, cc = cuda_layer.cuda_api().device_facts()
        key = engine_key(onnx_path, precision, tensorrt_version=str(trt.__version__), gpu_name=gpu,
                         compute_capability=cc, batch=batch)
        cache = Path(cache_dir) if cache_dir else engine_cache_dir(onnx_dir, spec.name, key, log=log)
        path = engine_path_for(cache, spec.name, key)
        if not path.is_file():
            engine_from_onnx(onnx_path, path, spec, key, timing_cache=timing_cache_path(cache, key), log=log)
        return cls(spec, path, cuda_graph=cuda_graph, batch=batch)

    # ---- activate ----------------------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = _require_tensorrt()
        if not self.engine_path.is_file():
            raise ExportFolderError(f"TensorRT engine not found: {self.engine_path}")
        self._cuda = cuda_layer.cuda_api()
        self._cuda.acquire()  # the context, current in this (the inference) thread
        try:
            self._load(trt)
        except BaseException:
            self._release()
            raise

    def _load(self, trt) -> None:
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(f"cannot load {self.engine_path}: built by another TensorRT version or for another GPU? "
                            "Delete it and it will be rebuilt")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"{self.name}: TensorRT could not create an execution context (out of GPU memory?)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        wanted = set(self.spec.input_names + self.spec.output_names)
        if set(names) != wanted:
            raise ContractError(f"engine {self.engine_path.name} has tensors {sorted(names)}, the contract says "
                                f"{sorted(wanted)}")
        for t in self.spec.inputs + self.spec.outputs:
            is_input = t in self.spec.inputs
            mode = self._engine.get_tensor_mode(t.name)
            if (mode == trt.TensorIOMode.INPUT) != is_input:
                raise ContractError(f"engine {self.engine_path.name}: '{t.name}' is an "
                                    f"{'output' if is_input else 'input'}, the contract says otherwise")
            # ICudaEngine.get_tensor_dtype + tensorrt.nptype (TensorRT Python API): the engine's own I/O type.
            # A float tensor of the contract may be fp16 or fp32 in the engine; any other type (frame_step's
            # uint8 frames; TensorRT 10 takes UINT8 as network I/O, onnx-tensorrt docs/operators.md) must match.
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(t.name)))
            wanted = np.dtype(t.dtype)
            if (dtype.kind == "f") != (wanted.kind == "f") or (wanted.kind != "f" and dtype != wanted):
                raise ContractError(f"engine {self.engine_path.name}: '{t.name}' is {dtype}, the contract says "
                                    f"{t.dtype}")
            self._dtypes[t.name] = dtype
        self._stream = self._cuda.stream()

    # ---- buffers -----------------------------------------------------------------------------------------
    def _max_batch(self) -> int | None:
        if self.batch_profile:
            return self.batch_profile[2]
        try:  # ICudaEngine.get_tensor_profile_shape(name, profile) -> [min, opt, max]
            return int(self._engine.get_tensor_profile_shape(self.spec.inputs[0].name, 0)[2][0])
        except Exception:
            return None

    def _allocate(self, batch: int) -> None:
        self._free_buffers()
        for t in self.spec.inputs:
            # set_input_shape returns False for a shape outside the optimisation profile.
            if not self._context.set_input_shape(t.name, t.concrete_shape(batch)):
                hi = self._max_batch()
                raise InputError(f"{self.name}: batch {batch} is outside the engine's profile "
                                 f"(max {hi if hi is not None else 'unknown'}); rebuild with a larger batch profile "
                                 "(TrtBackend.from_onnx(..., batch=(min, opt, max))) or use a smaller --batch")
        for t in self.spec.outputs:
            got = tuple(int(d) for d in self._context.get_tensor_shape(t.name))
            if got != t.concrete_shape(batch):
                raise ContractError(f"engine {self.engine_path.name}: output '{t.name}' has shape {got} at batch "
                                    f"{batch}, the contract says {t.concrete_shape(batch)}")
        for t in self.spec.inputs + self.spec.outputs:
            host = self._cuda.pinned_empty(t.concrete_shape(batch), self._dtypes[t.name])
            self._host[t.name] = host
            self._buffers[t.name] = self._cuda.malloc(host.nbytes)
            if self._context.set_tensor_address(t.name, self._buffers[t.name]) is False:
                raise BackendError(f"{self.name}: TensorRT refused the address of '{t.name}'")
        self._batch = batch

    def _free_graph(self) -> None:
        if self._graph is not None or self._graph_exec is not None:
            graph, graph_exec = self._graph, self._graph_exec
            self._graph = self._graph_exec = None
            self._cuda.destroy_graph(graph, graph_exec)

    def _free_buffers(self) -> None:
        self._free_graph()
        buffers, hosts = list(self._buffers.values()), list(self._host.values())
        self._buffers.clear()
        self._host.clear()
        self._batch = None
        for ptr in buffers:
            self._cuda.free(ptr)
        for host in hosts:
            self._cuda.free_host(host)

    # ---- run ---------------------------------------------------------------------------------------------
    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream):
            raise BackendError(f"{self.name}: TensorRT execution failed")

    def _capture(self) -> None:
        """Record one step as a CUDA graph. On any failure the capture is ended and dropped, the stream stays
        usable, and the error propagates."""
        self._enqueue()  # one plain run first: TensorRT may allocate on its first enqueue
        self._cuda.synchronize(self._stream)
        self._cuda.begin_capture(self._stream)
        try:
            self._enqueue()
            self._graph, self._graph_exec = self._cuda.end_capture(self._stream)
        except BaseException:
            self._graph = self._graph_exec = None
            self._cuda.abort_capture(self._stream)
            raise

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._cuda.in_thread():  # current in whichever thread runs inference
            return self._run(feed)

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feed.values())).shape[0]
        if batch != self._batch:
            self._allocate(batch)
        for t in self.spec.inputs:
            np.copyto(self._host[t.name], feed[t.name], casting="same_kind")
            self._cuda.htod_async(self._buffers[t.name], self._host[t.name], self._stream)
        if self.cuda_graph:
            if self._graph_exec is None:
                self._capture()
            self._cuda.launch_graph(self._graph_exec, self._stream)
        else:
            self._enqueue()
        for t in self.spec.outputs:
            self._cuda.dtoh_async(self._host[t.name], self._buffers[t.name], self._stream)
        self._cuda.synchronize(self._stream)
        return {t.name: self._host[t.name] if self._host[t.name].dtype == np.dtype(t.dtype)
                else self._host[t.name].astype(t.dtype) for t in self.spec.outputs}

    # ---- deactivate --------------------------------------------------------------------------------------
    def _release(self) -> None:
        """Free everything this backend holds, in dependency order; safe after a partial activate."""
        if self._cuda is None:
            return

        def drop_context():  # the execution context goes before the memory it points at
            self._context = None

        def drop_stream():
            if self._stream is not None:
                stream, self._stream = self._stream, None
                self._cuda.destroy_stream(stream)

        first_error = None
        with self._cuda.in_thread():
            for step in (self._free_graph, drop_context, self._free_buffers, drop_stream):
                try:  # one failing free must not leak the rest
                    step()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    first_error = first_error or exc
        self._engine = self._runtime = None
        self._dtypes.clear()
        cuda, self._cuda = self._cuda, None
        cuda.release()
        if first_error is not None:
            raise first_error

    def _deactivate(self) -> None:
        self._release()
