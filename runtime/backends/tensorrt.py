"""TensorRT 10/11: engines built from the exported graphs, cached safely, run with ``execute_async_v3``.

* fp32 engines come from ``<graph>.onnx``; fp16 engines from ``<graph>.fp16.onnx``, whose precision is in
  the graph (TensorRT 11 has no fp16 builder flag; on 10.x the network is created STRONGLY_TYPED).
* The engine cache key holds the ONNX file's sha256, the TensorRT version, the GPU name and compute
  capability, the precision, the batch profile and the builder optimisation level; the key is part of
  the file name, so a stale engine is never picked up. A missing engine is built once (under a lock)
  and written atomically, next to a reusable timing cache.
* Runs on its own stream with device buffers allocated once per batch size, pinned host buffers, and
  optional CUDA-graph capture of the whole step (cuda-python only).

Written against the TensorRT Python API documented for 10.x/11.x; it has not been run on this
project's CI, which has neither TensorRT nor a GPU. Its tests are marked ``tensorrt``/``gpu``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..contract import GraphSpec
from ..errors import ExportFolderError, FommError, InputError
from ..fileio import atomic_path, sha256_file
from ..manifest import engine_file_name, graph_file_name
from .base import Backend

WORKSPACE_BYTES = 4 << 30


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

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


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
               batch: tuple[int, int, int] = (1, 1, 8), optimization_level: int = 3) -> EngineKey:
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise FommError(f"batch profile must satisfy 1 <= min <= opt <= max, got {batch}")
    return EngineKey(sha256_file(onnx_path), tensorrt_version, gpu_name, compute_capability, precision, lo, opt, hi,
                     optimization_level)


def engine_path_for(cache_dir: str | Path, graph: str, key: EngineKey) -> Path:
    return Path(cache_dir) / engine_file_name(graph, key.precision, key.digest())


def _require_tensorrt():
    if importlib.util.find_spec("tensorrt") is None:
        raise FommError("the TensorRT backend needs the 'tensorrt' package and an NVIDIA GPU: "
                        "pip install 'fomm-deploy[gpu]'; or use --backend onnxruntime")
    import tensorrt as trt

    return trt


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
        if key.precision == "fp16" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # 10.x; ignored on 11.x
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise FommError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        config.builder_optimization_level = key.optimization_level
        cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for t in spec.inputs:
            profile.set_shape(t.name, t.concrete_shape(key.min_batch), t.concrete_shape(key.opt_batch),
                              t.concrete_shape(key.max_batch))
        config.add_optimization_profile(profile)
        log(f"building TensorRT {key.precision} engine for {onnx_path.name} (once; cached as {engine_path.name})")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise FommError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(bytes(serialized))
        with atomic_path(engine_path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(asdict(key), indent=2) + "\n")
        if timing_cache is not None:
            with atomic_path(timing_cache) as tmp:
                tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path


class TrtBackend(Backend):
    """A TensorRT engine for one graph. ``TrtBackend.from_onnx`` finds or builds the engine first."""

    kind = "tensorrt"

    def __init__(self, spec: GraphSpec, engine_path: str | Path, *, cuda_graph: bool = False,
                 name: str | None = None) -> None:
        super().__init__(spec, name=name)
        self.engine_path = Path(engine_path)
        self.cuda_graph = cuda_graph
        self._buffers: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._batch: int | None = None
        self._graph_exec = None

    @classmethod
    def from_onnx(cls, spec: GraphSpec, onnx_dir: str | Path, precision: str = "fp16", *,
                  cache_dir: str | Path | None = None, batch: tuple[int, int, int] = (1, 1, 8),
                  cuda_graph: bool = False, log=print) -> "TrtBackend":
        """Find the cached engine for this graph, GPU and TensorRT version, or build it once."""
        trt = _require_tensorrt()
        from .cuda import cuda_api

        onnx_path = onnx_file_for(onnx_dir, spec.name, precision)
        gpu, cc = cuda_api().device_facts()
        key = engine_key(onnx_path, precision, tensorrt_version=trt.__version__, gpu_name=gpu,
                         compute_capability=cc, batch=batch)
        cache = Path(cache_dir) if cache_dir else Path(onnx_dir) / "engines"
        path = engine_path_for(cache, spec.name, key)
        if not path.is_file():
            engine_from_onnx(onnx_path, path, spec, key, timing_cache=cache / "timing.cache", log=log)
        return cls(spec, path, cuda_graph=cuda_graph)

    def _activate(self) -> None:
        trt = _require_tensorrt()
        from .cuda import cuda_api

        if not self.engine_path.is_file():
            raise FommError(f"TensorRT engine not found: {self.engine_path}")
        self._cuda = cuda_api()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise FommError(f"cannot load {self.engine_path}: built by another TensorRT version or for another GPU? "
                            "Delete it and it will be rebuilt")
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        wanted = set(self.spec.input_names + self.spec.output_names)
        if set(names) != wanted:
            raise FommError(f"engine {self.engine_path.name} has tensors {sorted(names)}, the contract says "
                            f"{sorted(wanted)}")

    def _allocate(self, batch: int) -> None:
        for ptr in self._buffers.values():
            self._cuda.free(ptr)
        self._buffers.clear()
        self._host.clear()
        self._graph_exec = None
        for t in self.spec.inputs + self.spec.outputs:
            shape = t.concrete_shape(batch)
            if t in self.spec.inputs:
                self._context.set_input_shape(t.name, shape)
            host = self._cuda.pinned_empty(shape, np.float32)
            self._host[t.name] = host
            self._buffers[t.name] = self._cuda.malloc(host.nbytes)
            self._context.set_tensor_address(t.name, self._buffers[t.name])
        self._batch = batch

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream):
            raise FommError(f"{self.name}: TensorRT execution failed")

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feed.values())).shape[0]
        if batch != self._batch:
            self._allocate(batch)
        for t in self.spec.inputs:
            np.copyto(self._host[t.name], feed[t.name])
            self._cuda.htod_async(self._buffers[t.name], self._host[t.name], self._stream)
        if self.cuda_graph:
            if self._graph_exec is None:
                self._enqueue()  # one plain run first: TensorRT may allocate on its first enqueue
                self._cuda.synchronize(self._stream)
                self._cuda.begin_capture(self._stream)
                self._enqueue()
                self._graph_exec = self._cuda.end_capture(self._stream)
            self._cuda.launch_graph(self._graph_exec, self._stream)
        else:
            self._enqueue()
        for t in self.spec.outputs:
            self._cuda.dtoh_async(self._host[t.name], self._buffers[t.name], self._stream)
        self._cuda.synchronize(self._stream)
        return {t.name: self._host[t.name] for t in self.spec.outputs}

    def _deactivate(self) -> None:
        for ptr in self._buffers.values():
            self._cuda.free(ptr)
        self._buffers.clear()
        self._host.clear()
        self._context = self._engine = self._runtime = None
        self._batch = None
