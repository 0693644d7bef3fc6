"""A STAND-IN for the TensorRT Python API and for the CUDA layer, so that ``TrtBackend``'s own logic (shape
profiles, buffers, dtypes, the engine cache, builder settings, CUDA-graph capture, clean-up) can be tested
on a machine with neither TensorRT nor a GPU.

This is not TensorRT and nothing here runs on a GPU. "Engines" are JSON notes; "execution" runs the real
ONNX graph with ONNX Runtime on the CPU behind fake device buffers held in numpy host memory. A number it
produces says nothing about TensorRT's accuracy (parity) or speed: never report one as such.

What it enforces, after the documented semantics (TensorRT 10/11 Python API; CUDA runtime API):

* ``IExecutionContext.set_input_shape`` returns False for a shape outside the optimisation profile;
  ``get_tensor_shape`` reflects the input shapes set (outputs: -1 until every input has one).
* ``execute_async_v3`` reads the inputs from the addresses given by ``set_tensor_address`` and writes
  the outputs there, in the engine's I/O dtypes; returns False when a shape or an address is missing.
  While its stream is being captured it records instead of running; ``launch_graph`` replays.
* ``IBuilderConfig`` starts with ``BuilderFlag.TF32`` set; ``create_timing_cache`` may return None (on
  request); ``set_timing_cache`` returns False for a cache from another TensorRT or GPU and rejects None.
* Every CUDA call needs the layer's context current in the calling thread (contexts are per thread).
  Allocations, pinned buffers, streams and graphs are counted against their frees; device memory that is
  used after its free, or beyond its size, raises.
"""

from __future__ import annotations

import enum
import importlib.machinery
import itertools
import json
import threading
import types
from dataclasses import dataclass, field

import numpy as np

from fomm_deploy.runtime.backends.cuda import CudaApi


class StandinError(RuntimeError):
    """A call the real API would reject (or that would be undefined behaviour on a GPU)."""


# ---- the CUDA layer ---------------------------------------------------------------------------------------


class StandinCuda(CudaApi):
    """The CUDA layer backed by numpy host memory, counting every allocation against its free."""

    name = "standin"

    def __init__(self, gpu_name: str = "Standin GPU 0", compute_capability: str = "9.0") -> None:
        super().__init__()
        self.gpu_name, self.compute_capability = gpu_name, compute_capability
        self._ids = itertools.count(0x1000, 0x1000)
        self.device: dict[int, np.ndarray] = {}  # live device allocations, address -> bytes
        self.freed: set[int] = set()
        self.host: dict[int, np.ndarray] = {}  # live pinned arrays by id()
        self.streams: set[int] = set()
        self.graphs: dict[int, list] = {}  # live graph execs -> recorded work
        self.graph_objects: set[int] = set()
        self.capturing: dict[int, list] = {}  # stream -> work recorded since begin_capture
        self.counts = dict(malloc=0, free=0, pinned=0, free_host=0, stream=0, destroy_stream=0, graph=0,
                           destroy_graph=0, enter=0, exit=0, abort=0)
        self.enter_threads: list[int] = []

    # context per thread
    def _enter_thread(self) -> None:
        self.counts["enter"] += 1
        self.enter_threads.append(threading.get_ident())

    def _exit_thread(self) -> None:
        self.counts["exit"] += 1

    def _need_context(self) -> None:
        if not getattr(self._local, "current", False):
            raise StandinError(f"no CUDA context is current in thread {threading.current_thread().name}")

    def outstanding(self) -> dict[str, int]:
        """What is allocated and not freed (all zero after a clean deactivate)."""
        return dict(device=len(self.device), host=len(self.host), streams=len(self.streams),
                    graph_execs=len(self.graphs), graphs=len(self.graph_objects), capturing=len(self.capturing))

    # memory
    def malloc(self, nbytes: int) -> int:
        self._need_context()
        ptr = next(self._ids) * 0x1000
        self.device[ptr] = np.zeros(max(1, nbytes), np.uint8)
        self.counts["malloc"] += 1
        return ptr

    def free(self, ptr: int) -> None:
        self._need_context()
        if ptr not in self.device:
            raise StandinError(f"free of {ptr:#x}, which is not allocated")
        del self.device[ptr]
        self.freed.add(ptr)
        self.counts["free"] += 1

    def _memory(self, ptr: int, nbytes: int) -> np.ndarray:
        if ptr in self.freed:
            raise StandinError(f"device address {ptr:#x} used after its free")
        if ptr not in self.device:
            raise StandinError(f"device address {ptr:#x} was never allocated")
        if nbytes > self.device[ptr].nbytes:
            raise StandinError(f"{nbytes} bytes at {ptr:#x}, which holds {self.device[ptr].nbytes}")
        return self.device[ptr][:nbytes]

    def read(self, ptr: int, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return self._memory(ptr, nbytes).view(dtype).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self._memory(ptr, array.nbytes)[...] = array.reshape(-1).view(np.uint8)

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        self._need_context()
        arr = np.empty(shape, dtype)
        self.host[id(arr)] = arr
        self.counts["pinned"] += 1
        return arr

    def free_host(self, array: np.ndarray) -> None:
        self._need_context()
        if self.host.pop(id(array), None) is None:
            raise StandinError("free_host of an array pinned_empty did not make (or freed twice)")
        self.counts["free_host"] += 1

    # streams and copies (done at once: a later synchronize has nothing left to wait for)
    def stream(self) -> int:
        self._need_context()
        s = next(self._ids)
        self.streams.add(s)
        self.counts["stream"] += 1
        return s

    def destroy_stream(self, stream: int) -> None:
        self._need_context()
        self.streams.remove(stream)
        self.counts["destroy_stream"] += 1

    def _usable(self, stream: int, *, copy: bool = False) -> None:
        self._need_context()
        if stream not in self.streams:
            raise StandinError(f"stream {stream} does not exist")
        if copy and stream in self.capturing:
            raise StandinError("a synchronous host copy on a stream being captured invalidates the capture")

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._usable(stream, copy=True)
        self.write(dst, src)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._usable(stream, copy=True)
        dst[...] = self.read(src, dst.shape, dst.dtype)

    def synchronize(self, stream: int) -> None:
        self._usable(stream, copy=True)

    def device_facts(self) -> tuple[str, str]:  # device properties need no current context
        return self.gpu_name, self.compute_capability

    # CUDA graphs
    def is_capturing(self, stream: int) -> bool:
        return stream in self.capturing

    def record(self, stream: int, work) -> None:
        self.capturing[stream].append(work)

    def begin_capture(self, stream: int) -> None:
        self._usable(stream)
        if stream in self.capturing:
            raise StandinError(f"stream {stream} is already being captured")
        self.capturing[stream] = []

    def end_capture(self, stream: int):
        self._usable(stream)
        if stream not in self.capturing:
            raise StandinError(f"stream {stream} is not being captured")
        work = self.capturing.pop(stream)
        graph, graph_exec = next(self._ids), next(self._ids)
        self.graph_objects.add(graph)
        self.graphs[graph_exec] = work
        self.counts["graph"] += 1
        return graph, graph_exec

    def abort_capture(self, stream: int) -> None:
        if self.capturing.pop(stream, None) is not None:
            self.counts["abort"] += 1

    def launch_graph(self, graph_exec, stream: int) -> None:
        self._usable(stream)
        if graph_exec not in self.graphs:
            raise StandinError(f"graph exec {graph_exec} does not exist (destroyed?)")
        for work in self.graphs[graph_exec]:
            work()

    def destroy_graph(self, graph, graph_exec) -> None:
        self._need_context()
        if graph_exec is not None:
            del self.graphs[graph_exec]
        if graph is not None:
            self.graph_objects.remove(graph)
        self.counts["destroy_graph"] += 1


# ---- the TensorRT API -------------------------------------------------------------------------------------


@dataclass
class StandinState:
    """Knobs and records shared by one stand-in ``tensorrt`` module."""

    cuda: StandinCuda
    null_timing_cache: bool = False  # create_timing_cache returns None
    fail_during_capture: bool = False  # execute_async_v3 fails while its stream is captured
    parse_errors: list[str] = field(default_factory=list)  # the ONNX parser fails with these errors
    build_fails: bool = False  # build_serialized_network returns None
    output_dtype: str = "float32"  # the engine's output dtype (inputs stay float32)
    output_shape_lie: dict[str, tuple] = field(default_factory=dict)  # name -> shape the context reports
    builds: list[dict] = field(default_factory=list)  # one record per build_serialized_network
    executions: int = 0


def make_tensorrt(cuda: StandinCuda, version: str = "10.14.1.48") -> types.ModuleType:
    """A module object that stands in for ``import tensorrt`` (put it in ``sys.modules``)."""
    state = StandinState(cuda)
    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    mod.__version__ = version
    mod.standin = state
    major = int(version.split(".")[0])

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        STRONGLY_TYPED = 1  # the real value is TensorRT's; only the bit's use matters here

    class BuilderFlag(enum.IntEnum):
        TF32 = 7
        DIRECT_IO = 11

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1

    def nptype(dtype):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dtype]

    class Logger:
        WARNING = 2

        def __init__(self, severity=WARNING) -> None:
            self.severity = severity

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.origin = f"{version}|{cuda.gpu_name}|{cuda.compute_capability}".encode()
            self.foreign = bool(data) and not data.startswith(self.origin)
            self.entries = 0 if (self.foreign or not data) else int(data[len(self.origin) + 1:] or 0)

        def serialize(self) -> bytes:
            return self.origin + b"|" + str(self.entries).encode()

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags = {BuilderFlag.TF32}  # TF32 is on by default
            self.pools: dict = {}
            self.builder_optimization_level = 3
            self.timing_cache = None
            self.profiles: list = []

        def set_flag(self, flag) -> None:
            self.flags.add(BuilderFlag(flag))

        def clear_flag(self, flag) -> None:
            self.flags.discard(BuilderFlag(flag))

        def get_flag(self, flag) -> bool:
            return BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool, size: int) -> None:
            self.pools[MemoryPoolType(pool)] = int(size)

        def create_timing_cache(self, data: bytes):
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("create_timing_cache takes a buffer")
            return None if state.null_timing_cache else TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            if not isinstance(cache, TimingCache):
                raise TypeError(f"set_timing_cache(): incompatible argument {cache!r}")
            if cache.foreign and not ignore_mismatch:
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name: str, lo, opt, hi) -> None:
            lo, opt, hi = tuple(lo), tuple(opt), tuple(hi)
            if not (len(lo) == len(opt) == len(hi)) or any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise StandinError(f"profile for {name}: need min <= opt <= max, got {lo} {opt} {hi}")
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx_path = None

    class OnnxParser:
        def __init__(self, network: Network, logger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx_path = str(path)
            self.num_errors = len(state.parse_errors)
            return not state.parse_errors

        def get_error(self, i):
            return state.parse_errors[i] if i < len(state.parse_errors) else None

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            if major >= 11 and flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
                pass  # deprecated and ignored on 11.x: accepted, as TensorRT does
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig):
            if len(config.profiles) != 1:
                raise StandinError("the stand-in expects exactly one optimisation profile")
            if state.build_fails:
                return None  # what TensorRT returns when the build fails (its log says why)
            if config.timing_cache is not None:
                config.timing_cache.entries += 1
            record = dict(onnx=network.onnx_path, network_flags=network.flags,
                          builder_flags=sorted(int(f) for f in config.flags),
                          tf32=BuilderFlag.TF32 in config.flags,
                          strongly_typed=bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))),
                          workspace=config.pools.get(MemoryPoolType.WORKSPACE),
                          timing_cache=config.timing_cache is not None,
                          profile=config.profiles[0].shapes)
            state.builds.append(record)
            return json.dumps({"standin-engine": record}).encode()

    class Engine:
        def __init__(self, note: dict) -> None:
            import onnxruntime as ort

            self.note = note
            self.session = ort.InferenceSession(note["onnx"], providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.num_io_tensors = len(self.inputs) + len(self.outputs)
            self._output_shapes: dict[tuple, dict] = {}

        def get_tensor_name(self, i: int) -> str:
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name: str):
            return TensorIOMode.INPUT if name in self.inputs else (
                TensorIOMode.OUTPUT if name in self.outputs else TensorIOMode.NONE)

        def get_tensor_dtype(self, name: str):
            if name in self.outputs and state.output_dtype == "float16":
                return DataType.HALF
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile: int):
            return self.note["profile"][name]

        def output_shapes(self, shapes: dict) -> dict:
            """Output shapes for these input shapes: ONNX Runtime's, from one run on zeros (cached)."""
            key = tuple(sorted(shapes.items()))
            if key not in self._output_shapes:
                feed = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
                outs = self.session.run(self.outputs, feed)
                self._output_shapes[key] = {n: tuple(o.shape) for n, o in zip(self.outputs, outs)}
            return self._output_shapes[key]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape) -> bool:
            if name not in self.engine.inputs:
                return False
            lo, _, hi = self.engine.note["profile"][name]
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False  # outside the optimisation profile
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str):
            if name in self.engine.inputs:
                return self.shapes.get(name, tuple(-1 for _ in self.engine.note["profile"][name][0]))
            if name in state.output_shape_lie:
                return state.output_shape_lie[name]
            if len(self.shapes) < len(self.engine.inputs):
                return (-1,)
            return self.engine.output_shapes(self.shapes)[name]

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if name not in self.engine.inputs + self.engine.outputs:
                return False
            self.addresses[name] = int(ptr)
            return True

        def _run(self) -> None:
            feed = {n: cuda.read(self.addresses[n], self.shapes[n], np.float32) for n in self.engine.inputs}
            outs = self.engine.session.run(self.engine.outputs, feed)
            for n, value in zip(self.engine.outputs, outs):
                cuda.write(self.addresses[n], value.astype(nptype(self.engine.get_tensor_dtype(n))))
            state.executions += 1

        def execute_async_v3(self, stream_handle: int) -> bool:
            cuda._usable(stream_handle)
            names = self.engine.inputs + self.engine.outputs
            if len(self.shapes) < len(self.engine.inputs) or any(n not in self.addresses for n in names):
                return False
            if cuda.is_capturing(stream_handle):
                if state.fail_during_capture:
                    return False
                cuda.record(stream_handle, self._run)
                return True
            self._run()
            return True

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes):
            try:
                note = json.loads(bytes(data))["standin-engine"]
            except (ValueError, KeyError, TypeError):
                return None  # what TensorRT returns for an engine it cannot load
            return Engine(note)

    for obj in (NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, TensorIOMode, DataType, nptype, Logger,
                Builder, Runtime):
        setattr(mod, obj.__name__, obj)
    mod.OnnxParser = OnnxParser
    return mod
