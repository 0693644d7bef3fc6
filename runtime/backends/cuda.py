"""The one small CUDA layer the TensorRT backend needs: device buffers, pinned host buffers, a stream,
copies, device facts and (cuda-python only) CUDA-graph capture.

Two implementations behind one interface: pycuda (``pip install pycuda``, the user's choice; it compiles
against the CUDA toolkit) and cuda-python (``from cuda.bindings import runtime``, NVIDIA's own). The
first one installed wins; ``FOMM_CUDA=pycuda|cuda-python`` forces one. Never torch: a runtime deployment
must not need it, and two CUDA contexts in one process (pycuda + torch) are known to hang.
This module was written against the documented APIs and has not been run on this project's CI (no GPU).
"""

from __future__ import annotations

import abc
import ctypes
import importlib.util
import os

import numpy as np

from ..errors import BackendUnavailableError, FommError, InputError


class CudaApi(abc.ABC):
    """Device memory and streams as plain integers, so the TensorRT backend never sees the layer's types.

    Pointers and streams are ``int`` handles (what ``IExecutionContext.set_tensor_address`` and
    ``execute_async_v3`` take); host buffers are numpy arrays in page-locked memory; copies are
    asynchronous on the given stream and complete at ``synchronize(stream)``.
    """

    name = "base"

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
    def stream(self) -> int:
        """A new stream's handle (an int usable by ``execute_async_v3``)."""

    @abc.abstractmethod
    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None: ...

    @abc.abstractmethod
    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None: ...

    @abc.abstractmethod
    def synchronize(self, stream: int) -> None: ...

    @abc.abstractmethod
    def device_facts(self) -> tuple[str, str]:
        """(GPU name, compute capability as 'major.minor')."""

    def begin_capture(self, stream: int) -> None:
        raise BackendUnavailableError(f"CUDA-graph capture needs cuda-python; the {self.name} layer does not support it")

    def end_capture(self, stream: int):
        raise BackendUnavailableError(f"CUDA-graph capture needs cuda-python; the {self.name} layer does not support it")

    def launch_graph(self, graph_exec, stream: int) -> None:
        raise BackendUnavailableError(f"CUDA-graph capture needs cuda-python; the {self.name} layer does not support it")


class PycudaApi(CudaApi):
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        self._device = cuda.Device(int(os.environ.get("FOMM_CUDA_DEVICE", "0")))
        self._context = self._device.retain_primary_context()
        self._context.push()
        self._allocations: dict[int, object] = {}
        self._streams: dict[int, object] = {}

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

    def stream(self) -> int:
        s = self._cuda.Stream()
        self._streams[s.handle] = s
        return s.handle

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._cuda.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def device_facts(self) -> tuple[str, str]:
        major, minor = self._device.compute_capability()
        return self._device.name(), f"{major}.{minor}"


class CudaPythonApi(CudaApi):
    name = "cuda-python"

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart

        self._rt = cudart
        self._device = int(os.environ.get("FOMM_CUDA_DEVICE", "0"))
        self._check(cudart.cudaSetDevice(self._device))
        self._host: dict[int, int] = {}

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            _, text = self._rt.cudaGetErrorString(err)
            raise FommError(f"CUDA error: {text.decode() if isinstance(text, bytes) else text}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self._check(self._rt.cudaFree(ptr))

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._check(self._rt.cudaMallocHost(max(1, nbytes))))
        buf = (ctypes.c_byte * max(1, nbytes)).from_address(ptr)
        arr = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        self._host[arr.ctypes.data] = ptr
        return arr

    def stream(self) -> int:
        return int(self._check(self._rt.cudaStreamCreate()))

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
        return self._check(self._rt.cudaGraphInstantiate(graph, 0))

    def launch_graph(self, graph_exec, stream: int) -> None:
        self._check(self._rt.cudaGraphLaunch(graph_exec, stream))


def available_layers() -> list[str]:
    found = []
    if importlib.util.find_spec("pycuda") is not None:
        found.append("pycuda")
    if importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None:
        found.append("cuda-python")
    return found


def cuda_api() -> CudaApi:
    """The installed CUDA layer (pycuda first, then cuda-python; ``FOMM_CUDA`` forces one).

    Raises:
        FommError: neither is installed, or the forced one is missing, or no GPU can be used.
    """
    wanted = os.environ.get("FOMM_CUDA")
    layers = available_layers()
    if wanted:
        if wanted not in ("pycuda", "cuda-python"):
            raise InputError(f"FOMM_CUDA={wanted!r}: choose pycuda or cuda-python")
        if wanted not in layers:
            raise BackendUnavailableError(f"FOMM_CUDA={wanted} but {wanted} is not installed")
        layers = [wanted]
    if not layers:
        raise BackendUnavailableError("the TensorRT backend needs pycuda or cuda-python for GPU memory: "
                        "pip install pycuda (or pip install cuda-python)")
    try:
        return PycudaApi() if layers[0] == "pycuda" else CudaPythonApi()
    except FommError:
        raise
    except Exception as exc:  # driver missing, no device, ...
        raise BackendUnavailableError(f"cannot use the GPU through {layers[0]}: {str(exc).strip()[:300]}") from None
