"""The one small CUDA layer the TensorRT backend needs: device buffers, pinned host buffers, streams,
copies, device facts and (cuda-python only) CUDA-graph capture.

Two implementations behind one interface: cuda-python (``from cuda.bindings import runtime``, NVIDIA's own,
what the ``gpu`` extra installs) and pycuda (``pip install 'fomm-deploy[pycuda]'``; it compiles against the
CUDA toolkit). cuda-python is preferred when both are installed; ``FOMM_CUDA=pycuda|cuda-python`` forces one.
Never torch: a runtime deployment must not need it, and two CUDA contexts in one process (pycuda + torch)
are known to hang.

One layer object per process (:func:`cuda_api`), holding one context. Contexts and the current device are
per thread in CUDA, so whoever runs inference calls :meth:`CudaApi.acquire` in that thread (the TensorRT
backend does in ``activate``) and :meth:`CudaApi.release` when done (``deactivate``); a thread that did
not acquire it (fomm-live's inference thread) gets it for each ``infer`` through :meth:`CudaApi.in_thread`;
``atexit`` releases what the main thread still holds, so pycuda never finds a pushed context at module
cleanup.

This module was written against the documented APIs (named beside each call) and has not been run on this
project's CI (no GPU); tests/runtime/trt_standin.py replaces it there with a numpy stand-in.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import importlib.util
import os
import threading

import numpy as np

from ..core.errors import BackendError, BackendUnavailableError, FommError, InputError

LAYERS = ("cuda-python", "pycuda")  # preference order


class CudaApi(abc.ABC):
    """Device memory and streams as plain integers, so the TensorRT backend never sees the layer's types.

    Pointers and streams are ``int`` handles (what ``IExecutionContext.set_tensor_address`` and
    ``execute_async_v3`` take); host buffers are numpy arrays in page-locked memory; copies are
    asynchronous on the given stream and complete at ``synchronize(stream)``. Everything allocated here
    has its own free: ``free``, ``free_host``, ``destroy_stream``, ``destroy_graph``.
    """

    name = "base"

    def __init__(self) -> None:
        self._local = threading.local()  # per thread: how many users hold the context here

    # ---- context per thread --------------------------------------------------------------------------
    def acquire(self) -> None:
        """Make the context current in the calling thread and count one more user there."""
        self.make_current()
        self._local.users = getattr(self._local, "users", 0) + 1

    def release(self) -> None:
        """One user fewer in the calling thread; the last one gives the context back in this thread."""
        users = getattr(self._local, "users", 0) - 1
        self._local.users = max(0, users)
        if users <= 0:
            self._leave_thread()

    def make_current(self) -> None:
        """Make this layer's context (device) current in the calling thread; cheap when it already is."""
        if not getattr(self._local, "current", False):
            self._enter_thread()
            self._local.current = True

    @contextlib.contextmanager
    def in_thread(self):
        """The context current for the duration of a block, in any thread. A thread that holds it (through
        :meth:`acquire`) keeps it; any other thread (fomm-live's inference thread, when the backends were
        activated in the main one) gets it for the block only, so no thread is left holding it at exit."""
        if getattr(self._local, "current", False):
            yield
            return
        self.make_current()
        try:
            yield
        finally:
            if getattr(self._local, "users", 0) <= 0:
                self._leave_thread()

    def close(self) -> None:
        """At exit: give back what the calling (main) thread still holds."""
        self._local.users = 0
        self._leave_thread()

    def _leave_thread(self) -> None:
        if getattr(self._local, "current", False):
            self._local.current = False
            self._exit_thread()

    @abc.abstractmethod
    def _enter_thread(self) -> None: ...

    def _exit_thread(self) -> None:  # noqa: B027 - optional hook
        pass

    # ---- memory, streams, copies ---------------------------------------------------------------------
    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int:
        """``nbytes`` of device memory; returns its address."""

    @abc.abstractmethod
    def free(self, ptr: int) -> None:
        """Free memory from :meth:`malloc`."""

    @abc.abstractmethod
    def pinned_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised page-locked host array (fast, asynchronous copies)."""

    @abc.abstractmethod
    def free_host(self, array: np.ndarray) -> None:
        """Free an array from :meth:`pinned_empty` (it must not be used afterwards)."""

    @abc.abstractmethod
    def stream(self) -> int:
        """A new non-blocking stream's handle (an int usable by ``execute_async_v3``)."""

    @abc.abstractmethod
    def destroy_stream(self, stream: int) -> None: ...

    @abc.abstractmethod
    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None: ...

    @abc.abstractmethod
    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None: ...

    @abc.abstractmethod
    def synchronize(self, stream: int) -> None: ...

    @abc.abstractmethod
    def device_facts(self) -> tuple[str, str]:
        """(GPU name, compute capability as 'major.minor')."""

    # ---- CUDA graphs (cuda-python only) --------------------------------------------------------------
    def _no_graphs(self):
        return BackendUnavailableError(f"CUDA-graph capture needs cuda-python; the {self.name} layer does not "
                                       "support it")

    def begin_capture(self, stream: int) -> None:
        raise self._no_graphs()

    def end_capture(self, stream: int):
        """End capture on ``stream``; returns ``(graph, graph_exec)`` (destroy both with :meth:`destroy_graph`)."""
        raise self._no_graphs()

    def abort_capture(self, stream: int) -> None:
        """After a failure inside capture: end it if it is still on, drop what it made, leave the stream usable.
        Never raises."""

    def launch_graph(self, graph_exec, stream: int) -> None:
        raise self._no_graphs()

    def destroy_graph(self, graph, graph_exec) -> None:
        """Destroy what :meth:`end_capture` returned (either may be None)."""


class CudaPythonApi(CudaApi):
    """NVIDIA's cuda-python, runtime API (``cuda.bindings.runtime``, cuda-bindings >= 12.6).

    Every call follows the CUDA Runtime API reference (docs.nvidia.com/cuda/cuda-runtime-api); cuda-python
    returns ``(cudaError_t, *results)`` for each (cuda-python docs, "Overview").
    """

    name = "cuda-python"

    def __init__(self) -> None:
        super().__init__()
        from cuda.bindings import runtime as cudart

        self._rt = cudart
        self._device = int(os.environ.get("FOMM_CUDA_DEVICE", "0"))
        self._host: dict[int, int] = {}  # array data address -> cudaMallocHost pointer
        self.make_current()

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            _, text = self._rt.cudaGetErrorString(err)
            raise BackendError(f"CUDA error: {text.decode() if isinstance(text, bytes) else text}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def _enter_thread(self) -> None:
        # cudaSetDevice is per host thread (CUDA Runtime API, Device Management): every thread that runs
        # inference sets it, so FOMM_CUDA_DEVICE holds in fomm-live's inference thread too.
        self._check(self._rt.cudaSetDevice(self._device))

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self._check(self._rt.cudaFree(ptr))

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        nbytes = max(1, count * dtype.itemsize)
        ptr = int(self._check(self._rt.cudaMallocHost(nbytes)))
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
        self._host[arr.ctypes.data] = ptr
        return arr

    def free_host(self, array: np.ndarray) -> None:
        ptr = self._host.pop(array.ctypes.data, None)
        if ptr is not None:
            self._check(self._rt.cudaFreeHost(ptr))

    def stream(self) -> int:
        # cudaStreamCreateWithFlags(cudaStreamNonBlocking): no implicit sync with the legacy default stream.
        return int(self._check(self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking)))

    def destroy_stream(self, stream: int) -> None:
        self._check(self._rt.cudaStreamDestroy(stream))

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._check(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                             self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._check(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                             self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def synchronize(self, stream: int) -> None:
        self._check(self._rt.cudaStreamSynchronize(stream))

    def device_facts(self) -> tuple[str, str]:
        props = self._check(self._rt.cudaGetDeviceProperties(self._device))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"

    def begin_capture(self, stream: int) -> None:
        self._check(self._rt.cudaStreamBeginCapture(
            stream, self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))

    def end_capture(self, stream: int):
        graph = self._check(self._rt.cudaStreamEndCapture(stream))
        try:
            return graph, self._check(self._rt.cudaGraphInstantiate(graph, 0))
        except BaseException:
            self._rt.cudaGraphDestroy(graph)
            raise

    def abort_capture(self, stream: int) -> None:
        # cudaStreamIsCapturing, then cudaStreamEndCapture ends an invalidated capture too (returning an
        # error and possibly a graph), after which the stream takes ordinary work again.
        try:
            err, status = self._rt.cudaStreamIsCapturing(stream)
            if err != self._rt.cudaError_t.cudaSuccess or \
                    status == self._rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone:
                return
            result = self._rt.cudaStreamEndCapture(stream)
            graph = result[1] if isinstance(result, tuple) and len(result) > 1 else None
            if graph:
                self._rt.cudaGraphDestroy(graph)
            self._rt.cudaGetLastError()  # clear the (non-sticky) error the failed capture left behind
        except Exception:
            pass

    def launch_graph(self, graph_exec, stream: int) -> None:
        self._check(self._rt.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph, graph_exec) -> None:
        if graph_exec is not None:
            self._check(self._rt.cudaGraphExecDestroy(graph_exec))
        if graph is not None:
            self._check(self._rt.cudaGraphDestroy(graph))


class PycudaApi(CudaApi):
    """pycuda (documen.tician.de/pycuda/driver.html): one retained primary context, pushed once per thread
    that uses it and popped in that thread on release (pycuda contexts live on a per-thread stack)."""

    name = "pycuda"

    def __init__(self) -> None:
        super().__init__()
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        self._device = cuda.Device(int(os.environ.get("FOMM_CUDA_DEVICE", "0")))
        self._context = self._device.retain_primary_context()
        self._allocations: dict[int, object] = {}
        self._streams: dict[int, object] = {}
        self.make_current()

    def _enter_thread(self) -> None:
        self._context.push()

    def _exit_thread(self) -> None:
        self._cuda.Context.pop()  # pops the calling thread's top context: the one _enter_thread pushed

    def malloc(self, nbytes: int) -> int:
        alloc = self._cuda.mem_alloc(max(1, nbytes))
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        return self._cuda.pagelocked_empty(shape, dtype)

    def free_host(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)  # pagelocked_empty's array is a view of a HostAllocation
        if hasattr(base, "free"):
            base.free()

    def stream(self) -> int:
        # pycuda.driver.Stream(flags): flags are CUstream_flags; 1 = CU_STREAM_NON_BLOCKING (CUDA Driver API).
        s = self._cuda.Stream(flags=1)
        self._streams[s.handle] = s
        return s.handle

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)  # pycuda destroys a stream when its object goes

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def device_facts(self) -> tuple[str, str]:
        major, minor = self._device.compute_capability()
        return self._device.name(), f"{major}.{minor}"


def _has_module(name: str) -> bool:
    """``find_spec`` that never raises (a missing parent package, or a module without a spec)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def tensorrt_missing() -> list[str]:
    """What the TensorRT backend needs and this environment lacks (empty when it can be tried).

    Only imports are probed here (``cuda.bindings`` itself, not any ``cuda.*`` namespace package); whether
    a GPU answers is the CUDA layer's to say when a backend activates.
    """
    missing = []
    if not _has_module("tensorrt"):
        missing.append("the 'tensorrt' Python package (pip install 'fomm-deploy[gpu]')")
    if not available_layers():
        missing.append("a CUDA layer for GPU memory (cuda-python or pycuda)")
    return missing


def available_layers() -> list[str]:
    """The CUDA layers installed here, preferred first. ``cuda`` alone is any ``cuda.*`` namespace package
    (cupy's, cuda-core's...), so cuda-python is recognised by ``cuda.bindings`` itself."""
    found = []
    if _has_module("cuda.bindings"):
        found.append("cuda-python")
    if _has_module("pycuda"):
        found.append("pycuda")
    return found


_API: CudaApi | None = None
_API_LOCK = threading.Lock()


def _close_at_exit() -> None:
    if _API is not None:
        _API.close()


def cuda_api() -> CudaApi:
    """The process's CUDA layer (made once; cuda-python first, then pycuda; ``FOMM_CUDA`` forces one).

    Raises:
        BackendUnavailableError: neither is installed, or the forced one is missing, or no GPU can be used.
        InputError: ``FOMM_CUDA`` names no layer.
    """
    global _API
    with _API_LOCK:
        if _API is not None:
            return _API
        wanted = os.environ.get("FOMM_CUDA")
        layers = available_layers()
        if wanted:
            if wanted not in LAYERS:
                raise InputError(f"FOMM_CUDA={wanted!r}: choose cuda-python or pycuda")
            if wanted not in layers:
                raise BackendUnavailableError(f"FOMM_CUDA={wanted} but {wanted} is not installed")
            layers = [wanted]
        if not layers:
            raise BackendUnavailableError("the TensorRT backend needs cuda-python (or pycuda) for GPU memory: "
                                          "pip install 'fomm-deploy[gpu]'")
        try:
            api = CudaPythonApi() if layers[0] == "cuda-python" else PycudaApi()
        except FommError:
            raise
        except Exception as exc:  # driver missing, no device, ...
            raise BackendUnavailableError(f"cannot use the GPU through {layers[0]}: {str(exc).strip()[:300]}") \
                from None
        _API = api
        atexit.register(_close_at_exit)
        return api


def device_count() -> int:
    """How many CUDA devices the installed CUDA layer sees (0 without a layer, a driver or a device).
    Asks cuda-python (``cudaGetDeviceCount``) or pycuda (``Device.count()``), never torch."""
    layers = available_layers()
    wanted = os.environ.get("FOMM_CUDA")
    if wanted in layers:
        layers = [wanted]
    for layer in layers:
        try:
            if layer == "cuda-python":
                from cuda.bindings import runtime as cudart

                err, count = cudart.cudaGetDeviceCount()
                if err == cudart.cudaError_t.cudaSuccess:
                    return int(count)
            else:
                import pycuda.driver as cuda

                cuda.init()
                return int(cuda.Device.count())
        except Exception:
            continue
    return 0
