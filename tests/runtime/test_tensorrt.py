"""The TensorRT backend's own logic, against a stand-in of the TensorRT API and of the CUDA layer
(tests/runtime/trt_standin.py), plus the CUDA-layer choice and ONNX Runtime's GPU providers.

The stand-in computes with ONNX Runtime on the CPU: these tests check buffers, shapes, keys, flags and
clean-up, never TensorRT's numerics or speed. The tests at the end (``tensorrt``/``gpu``) need the real
thing and are skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading
import warnings

import numpy as np
import pytest

from fomm_deploy.runtime.animator import Animator
from fomm_deploy.runtime.backends import cuda as cuda_layer
from fomm_deploy.runtime.backends import onnxrt
from fomm_deploy.runtime.backends import tensorrt as trt_backend
from fomm_deploy.runtime.backends.onnxrt import OrtBackend, check_providers, tensorrt_ep_options
from fomm_deploy.runtime.backends.tensorrt import BUILDER_REVISION, TrtBackend, engine_key, timing_cache_path
from fomm_deploy.runtime.core.errors import (BackendError, BackendUnavailableError, ContractError, FommError,
                                             InputError)
from fomm_deploy.runtime.core.fileio import sha256_file
from fomm_deploy.runtime.graphs import load_exported, make_backend

from .trt_standin import StandinCuda, StandinError, make_tensorrt


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """Install the stand-ins: ``import tensorrt`` gets the fake module, ``cuda_api()`` the numpy CUDA layer."""
    cuda = StandinCuda()
    trt = make_tensorrt(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_layer, "cuda_api", lambda: cuda)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return trt


@pytest.fixture
def exported(golden_export):
    return load_exported(golden_export)


def _trt(exported, tmp_path, graph="kp_detector", precision="fp32", **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "engines")
    return TrtBackend.from_onnx(exported.specs[graph], exported.dir, precision, log=lambda _m: None, **kwargs)


def _frames(golden_inputs, n):
    return np.ascontiguousarray(golden_inputs["driving"][:n])


def _ort_reference(exported, graph, feed):
    with make_backend("onnxruntime", exported, graph) as ort_backend:
        return {k: v.copy() for k, v in ort_backend.infer(feed).items()}


# ---- shapes, profiles, outputs ------------------------------------------------------------------------


def test_outputs_come_back_through_the_device_buffers_and_are_reused(standin, exported, golden_inputs, tmp_path):
    backend = _trt(exported, tmp_path)
    feed1, feed2 = {"image": _frames(golden_inputs, 1)}, {"image": np.ascontiguousarray(golden_inputs["driving"][1:2])}
    with backend:
        out1 = backend.infer(feed1)
        first = {k: v.copy() for k, v in out1.items()}
        out2 = backend.infer(feed2)
        for name in backend.spec.output_names:
            assert out2[name] is out1[name]  # the same pinned array, overwritten: callers must copy
    for name, want in _ort_reference(exported, "kp_detector", feed1).items():
        np.testing.assert_array_equal(first[name], want)  # the stand-in's plumbing, not TensorRT numerics
    for name, want in _ort_reference(exported, "kp_detector", feed2).items():
        np.testing.assert_array_equal(out2[name], want)


def test_batch_outside_the_profile_is_an_input_error(standin, exported, golden_inputs, tmp_path):
    backend = _trt(exported, tmp_path, batch=(1, 1, 2))
    with backend:
        backend.infer({"image": _frames(golden_inputs, 2)})
        with pytest.raises(InputError, match=r"batch 3 is outside the engine's profile \(max 2\).*smaller --batch"):
            backend.infer({"image": _frames(golden_inputs, 3)})
        out = backend.infer({"image": _frames(golden_inputs, 1)})  # still usable afterwards
        assert out["kp_value"].shape[0] == 1


def test_keypoints_kept_by_the_animator_survive_reused_outputs(standin, exported, golden_inputs, tmp_path):
    kp = _trt(exported, tmp_path).activate()
    gen = make_backend("onnxruntime", exported, "generator").activate()
    try:
        a = Animator(kp, gen, (128, 128))
        frames = golden_inputs["driving"].transpose(0, 2, 3, 1)
        first = a.keypoints(frames[:1])
        kept = first.value.copy(), first.jacobian.copy()
        raw = kp.infer({"image": np.ascontiguousarray(golden_inputs["driving"][1:2])})
        assert not np.allclose(raw["kp_value"], kept[0])  # the backend's buffer did change under it
        np.testing.assert_array_equal(first.value, kept[0])
        np.testing.assert_array_equal(first.jacobian, kept[1])
        a.set_source(frames[2])
        source_kp = a.source_keypoints.value.copy()
        a.animate_prepared(frames[3:4])
        np.testing.assert_array_equal(a.source_keypoints.value, source_kp)
    finally:
        kp.deactivate()
        gen.deactivate()


def test_io_dtypes_come_from_the_engine(standin, exported, golden_inputs, tmp_path):
    standin.standin.output_dtype = "float16"  # an engine with fp16 outputs
    feed = {"image": _frames(golden_inputs, 1)}
    with _trt(exported, tmp_path) as backend:
        out = backend.infer(feed)
    for name, want in _ort_reference(exported, "kp_detector", feed).items():
        assert out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name], want.astype(np.float16).astype(np.float32))


def test_output_shape_is_checked_against_the_contract(standin, exported, golden_inputs, tmp_path):
    standin.standin.output_shape_lie = {"kp_value": (1, 7, 2)}
    with _trt(exported, tmp_path) as backend:
        with pytest.raises(ContractError, match=r"output 'kp_value' has shape \(1, 7, 2\)"):
            backend.infer({"image": _frames(golden_inputs, 1)})


# ---- the engine cache key and the builder --------------------------------------------------------------


def test_engine_key_records_everything_the_engine_depends_on(standin, exported, tmp_path):
    backend = _trt(exported, tmp_path, batch=(1, 2, 4))
    key = json.loads(backend.engine_path.with_suffix(".json").read_text())
    assert key == dict(onnx_sha256=sha256_file(exported.dir / "kp_detector.onnx"), tensorrt_version="10.14.1.48",
                       gpu_name="Standin GPU 0", compute_capability="9.0", precision="fp32", min_batch=1, opt_batch=2,
                       max_batch=4, optimization_level=3, tf32=False, strongly_typed=True,
                       workspace_bytes=trt_backend.WORKSPACE_BYTES, builder_revision=BUILDER_REVISION)
    rebuilt = engine_key(exported.dir / "kp_detector.onnx", "fp32", tensorrt_version="10.14.1.48",
                         gpu_name="Standin GPU 0", compute_capability="9.0", batch=(1, 2, 4))
    assert backend.engine_path.name == f"kp_detector.fp32.{rebuilt.digest()}.engine"
    assert len(standin.standin.builds) == 1
    assert _trt(exported, tmp_path, batch=(1, 2, 4)).engine_path == backend.engine_path
    assert len(standin.standin.builds) == 1  # found in the cache, not rebuilt


def test_tf32_is_cleared_for_fp32_only_and_networks_are_strongly_typed(standin, exported, tmp_path):
    _trt(exported, tmp_path, "generator", "fp32")
    _trt(exported, tmp_path, "generator", "fp16")
    fp32, fp16 = standin.standin.builds
    assert fp32["onnx"].endswith("generator.onnx") and fp16["onnx"].endswith("generator.fp16.onnx")
    assert fp32["tf32"] is False
    assert fp16["tf32"] is True  # TensorRT's default, left alone
    assert fp32["strongly_typed"] and fp16["strongly_typed"]
    assert fp32["workspace"] == trt_backend.WORKSPACE_BYTES
    assert fp32["profile"]["source"] == [[1, 3, 128, 128], [1, 3, 128, 128], [8, 3, 128, 128]]


def test_tensorrt_11_gets_no_strongly_typed_flag(monkeypatch, exported, tmp_path):
    cuda = StandinCuda()
    trt = make_tensorrt(cuda, version="11.1.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_layer, "cuda_api", lambda: cuda)
    _trt(exported, tmp_path, precision="fp16")
    assert trt.standin.builds[0]["network_flags"] == 0  # implied on 11.x (the flag is deprecated there)


def test_a_null_timing_cache_does_not_stop_the_build(standin, exported, tmp_path):
    standin.standin.null_timing_cache = True
    messages = []
    backend = TrtBackend.from_onnx(exported.specs["kp_detector"], exported.dir, "fp32", cache_dir=tmp_path / "e",
                                   log=messages.append)
    assert backend.engine_path.is_file()
    assert standin.standin.builds[0]["timing_cache"] is False
    assert any("no timing cache" in m for m in messages)
    assert not list((tmp_path / "e").glob("timing*"))


def test_one_timing_cache_per_tensorrt_version_and_gpu(standin, exported, tmp_path):
    backend = _trt(exported, tmp_path)
    key = engine_key(exported.dir / "kp_detector.onnx", "fp32", tensorrt_version="10.14.1.48",
                     gpu_name="Standin GPU 0", compute_capability="9.0")
    cache = timing_cache_path(tmp_path / "engines", key)
    assert cache.name == "timing.trt10.14.1.48.Standin-GPU-0.sm9.0.cache" and cache.is_file()
    assert backend.engine_path.parent == cache.parent
    # A cache left by another GPU under that name does not load: the build starts a fresh one.
    cache.write_bytes(b"10.14.1.48|Other GPU|8.6|5")
    _trt(exported, tmp_path, "generator")
    assert standin.standin.builds[-1]["timing_cache"] is True
    assert cache.read_bytes().startswith(b"10.14.1.48|Standin GPU 0|9.0|")


def test_read_only_export_folder_sends_engines_to_the_user_cache(standin, exported, monkeypatch, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(exported.dir / "kp_detector.onnx", folder)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:  # root writes through permission bits: let the probe see what a user would
        real = trt_backend._can_write
        monkeypatch.setattr(trt_backend, "_can_write", lambda d: not str(d).startswith(str(folder)) and real(d))
    try:
        spec = exported.specs["kp_detector"]
        messages = []
        backend = TrtBackend.from_onnx(spec, folder, "fp32", log=messages.append)
        user = tmp_path / "xdg" / "fomm-deploy" / "engines"
        assert backend.engine_path.parent == user and backend.engine_path.is_file()
        assert any("cannot be written" in m for m in messages)
        assert TrtBackend.from_onnx(spec, folder, "fp32", log=messages.append).engine_path == backend.engine_path
        assert len(standin.standin.builds) == 1  # found there next time
    finally:
        folder.chmod(stat.S_IRWXU)


def test_what_tensorrt_cannot_parse_build_or_load_is_a_backend_error(standin, exported, tmp_path):
    standin.standin.parse_errors = ["unsupported op Foo"]
    with pytest.raises(BackendError, match="cannot parse .*kp_detector.onnx: unsupported op Foo"):
        _trt(exported, tmp_path).activate()
    standin.standin.parse_errors = []
    standin.standin.build_fails = True
    with pytest.raises(BackendError, match="failed to build an engine from .*kp_detector.onnx"):
        _trt(exported, tmp_path).activate()
    standin.standin.build_fails = False
    backend = _trt(exported, tmp_path).activate()
    backend.deactivate()
    backend.engine_path.write_bytes(b"an engine of another TensorRT")
    with pytest.raises(BackendError, match="Delete it and it will be rebuilt"):
        _trt(exported, tmp_path).activate()


# ---- CUDA graphs, threads and clean-up -----------------------------------------------------------------


def test_a_failure_inside_capture_ends_it_and_leaves_the_stream_usable(standin, exported, golden_inputs, tmp_path):
    cuda = standin.standin.cuda
    backend = _trt(exported, tmp_path, cuda_graph=True)
    feed = {"image": _frames(golden_inputs, 1)}
    with backend:
        standin.standin.fail_during_capture = True
        with pytest.raises(BackendError, match="TensorRT execution failed"):
            backend.infer(feed)
        assert cuda.outstanding()["capturing"] == 0 and cuda.counts["abort"] == 1
        assert cuda.outstanding()["graph_execs"] == 0
        standin.standin.fail_during_capture = False
        out = backend.infer(feed)  # the same stream, captured this time
        assert cuda.counts["graph"] == 1
        ran = standin.standin.executions
        out = backend.infer(feed)  # replayed from the graph
        assert standin.standin.executions == ran + 1 and cuda.counts["graph"] == 1
        for name, want in _ort_reference(exported, "kp_detector", feed).items():
            np.testing.assert_array_equal(out[name], want)
        backend.infer({"image": _frames(golden_inputs, 2)})  # a new batch size: a new graph, the old one gone
        assert cuda.counts["graph"] == 2 and cuda.outstanding()["graph_execs"] == 1
    assert cuda.outstanding() == dict(device=0, host=0, streams=0, graph_execs=0, graphs=0, capturing=0)


def test_deactivate_frees_everything(standin, exported, golden_inputs, tmp_path):
    cuda = standin.standin.cuda
    backend = _trt(exported, tmp_path, cuda_graph=True)
    for _ in range(2):  # activate again after a deactivate
        with backend:
            backend.infer({"image": _frames(golden_inputs, 1)})
            backend.infer({"image": _frames(golden_inputs, 3)})
            assert cuda.outstanding()["device"] == 3  # image, kp_value, kp_jacobian: the old batch's went
        assert cuda.outstanding() == dict(device=0, host=0, streams=0, graph_execs=0, graphs=0, capturing=0)
    c = cuda.counts
    assert c["malloc"] == c["free"] and c["pinned"] == c["free_host"] and c["stream"] == c["destroy_stream"] == 2
    assert c["graph"] == c["destroy_graph"] == 4
    assert c["enter"] == c["exit"] == 2  # the context went back each time


def _run_in_thread(fn) -> threading.Thread:
    """Run ``fn`` in a thread named "inference" (as fomm-live does), wait, and fail with its error if any."""
    errors = []

    def target():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=target, name="inference")
    t.start()
    t.join()
    assert not errors, errors
    return t


def test_the_context_is_current_in_the_thread_that_runs_inference(standin, exported, golden_inputs, tmp_path):
    cuda = standin.standin.cuda
    backend = _trt(exported, tmp_path)
    results = {}

    def worker():  # what fomm-live's inference thread does
        with backend:
            results["out"] = backend.infer({"image": _frames(golden_inputs, 1)})["kp_value"].copy()

    t = _run_in_thread(worker)
    assert cuda.enter_threads == [t.ident]  # made current there (not in the thread that built the backend)
    assert cuda.counts["enter"] == cuda.counts["exit"] == 1 and cuda.outstanding()["device"] == 0


def test_inference_in_another_thread_than_activate_makes_the_context_current_there(standin, exported,
                                                                                    golden_inputs, tmp_path):
    # fomm-live activates its backends in the main thread and runs them in its inference thread.
    cuda = standin.standin.cuda
    with _trt(exported, tmp_path) as backend:
        t = _run_in_thread(lambda: backend.infer({"image": _frames(golden_inputs, 1)}))
        assert cuda.enter_threads == [threading.get_ident(), t.ident]
        assert cuda.counts["exit"] == 1  # the inference thread gave it back after its step: none held at exit
    assert cuda.outstanding()["device"] == 0 and cuda.counts["enter"] == cuda.counts["exit"] == 2


def test_the_stand_in_refuses_work_without_a_current_context():
    cuda = StandinCuda()
    with pytest.raises(StandinError, match="no CUDA context"):
        cuda.malloc(4)


# ---- the CUDA layer and ONNX Runtime's GPU providers ---------------------------------------------------


def _fake_packages(tmp_path, *names):
    root = tmp_path / "site"
    for name in names:
        pkg = root.joinpath(*name.split("."))
        pkg.mkdir(parents=True, exist_ok=True)
        if name != "cuda":  # cuda itself stays a namespace package, as cupy and cuda-core leave it
            (pkg / "__init__.py").write_text("")
    return root


@pytest.mark.parametrize("packages,layers", [
    (("cuda",), []),  # a cuda.* namespace package is not cuda-python
    (("cuda", "cuda.bindings"), ["cuda-python"]),
    (("pycuda",), ["pycuda"]),
    (("cuda", "cuda.bindings", "pycuda"), ["cuda-python", "pycuda"]),  # cuda-python first
])
def test_available_layers(monkeypatch, tmp_path, packages, layers):
    monkeypatch.syspath_prepend(str(_fake_packages(tmp_path, *packages)))
    names = ("cuda", "cuda.bindings", "pycuda")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        assert cuda_layer.available_layers() == layers
    finally:
        for name in names:  # find_spec imported the fake parents: forget them
            sys.modules.pop(name, None)


def test_cuda_api_is_made_once_and_forced_by_fomm_cuda(monkeypatch):
    made = []

    class Fake(cuda_layer.CudaApi):
        def __init__(self):
            super().__init__()
            made.append(self)

        def _enter_thread(self):
            pass

        malloc = free = pinned_empty = free_host = stream = destroy_stream = None
        htod_async = dtoh_async = synchronize = device_facts = None

    Fake.__abstractmethods__ = frozenset()
    monkeypatch.setattr(cuda_layer, "_API", None)
    monkeypatch.setattr(cuda_layer, "available_layers", lambda: ["cuda-python", "pycuda"])
    monkeypatch.setattr(cuda_layer, "CudaPythonApi", Fake)
    monkeypatch.setattr(cuda_layer, "PycudaApi", lambda: pytest.fail("pycuda chosen over cuda-python"))
    assert cuda_layer.cuda_api() is cuda_layer.cuda_api() and len(made) == 1
    monkeypatch.setattr(cuda_layer, "_API", None)
    monkeypatch.setenv("FOMM_CUDA", "pycuda")
    monkeypatch.setattr(cuda_layer, "available_layers", lambda: ["cuda-python"])
    with pytest.raises(BackendUnavailableError, match="FOMM_CUDA=pycuda but pycuda is not installed"):
        cuda_layer.cuda_api()
    monkeypatch.setenv("FOMM_CUDA", "torch")
    with pytest.raises(InputError, match="choose cuda-python or pycuda"):
        cuda_layer.cuda_api()


def _fake_cudart(monkeypatch):
    """A recording fake of ``cuda.bindings.runtime``: (err, *results) tuples as cuda-python returns them.
    It checks which calls CudaPythonApi makes and with what, not what CUDA would do with them."""
    import ctypes
    import enum
    import types

    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
        cudaSuccess = 0
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureStatus(enum.IntEnum):  # noqa: N801
        cudaStreamCaptureStatusNone = 0
        cudaStreamCaptureStatusActive = 1

    ok = cudaError_t.cudaSuccess
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.calls, rt.pinned, rt.capturing = [], {}, set()
    rt.cudaError_t, rt.cudaStreamCaptureStatus, rt.cudaStreamNonBlocking = cudaError_t, cudaStreamCaptureStatus, 1
    rt.cudaGetErrorString = lambda err: (ok, b"fake error")
    rt.cudaSetDevice = lambda d: rt.calls.append(("cudaSetDevice", threading.get_ident(), d)) or (ok,)
    rt.cudaStreamCreateWithFlags = lambda flags: rt.calls.append(("cudaStreamCreateWithFlags", flags)) or (ok, 77)
    rt.cudaStreamDestroy = lambda s: rt.calls.append(("cudaStreamDestroy", s)) or (ok,)

    def malloc_host(n):
        buf = ctypes.create_string_buffer(n)
        rt.pinned[ctypes.addressof(buf)] = buf
        return ok, ctypes.addressof(buf)

    rt.cudaMallocHost = malloc_host
    rt.cudaFreeHost = lambda p: (rt.pinned.pop(p), (ok,))[1]
    rt.cudaStreamIsCapturing = lambda s: (ok, cudaStreamCaptureStatus(int(s in rt.capturing)))
    rt.cudaStreamEndCapture = lambda s: (rt.capturing.discard(s), (cudaError_t.cudaErrorStreamCaptureInvalidated, 5))[1]
    rt.cudaGraphDestroy = lambda g: rt.calls.append(("cudaGraphDestroy", g)) or (ok,)
    rt.cudaGetLastError = lambda: (ok,)
    rt.cudaGetDeviceCount = lambda: (ok, 2)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    top = types.ModuleType("cuda")
    top.bindings = bindings
    for name, mod in (("cuda", top), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, mod)
    return rt


def test_cuda_python_layer_calls(monkeypatch):
    rt = _fake_cudart(monkeypatch)
    monkeypatch.setenv("FOMM_CUDA_DEVICE", "1")
    api = cuda_layer.CudaPythonApi()
    main = threading.get_ident()
    t = threading.Thread(target=lambda: api.in_thread().__enter__())
    t.start()
    t.join()
    assert ("cudaSetDevice", main, 1) in rt.calls and ("cudaSetDevice", t.ident, 1) in rt.calls  # per thread
    s = api.stream()
    assert ("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking) in rt.calls
    api.destroy_stream(s)
    host = api.pinned_empty((2, 3), np.float32)
    host[...] = 1.5  # really backed by the pinned allocation
    assert len(rt.pinned) == 1
    api.free_host(host)
    assert not rt.pinned
    rt.capturing.add(s)
    api.abort_capture(s)  # an invalidated capture: ended, its graph destroyed, no exception
    assert not rt.capturing and ("cudaGraphDestroy", 5) in rt.calls
    api.abort_capture(s)  # not capturing: nothing to do
    monkeypatch.setattr(cuda_layer, "available_layers", lambda: ["cuda-python"])
    assert cuda_layer.device_count() == 2  # what fomm-export --engine asks instead of torch.cuda
    rt.cudaMalloc = lambda n: (rt.cudaError_t.cudaErrorStreamCaptureInvalidated, 0)
    with pytest.raises(BackendError, match="CUDA error: fake error"):
        api.malloc(16)


def test_engine_prerequisites_ask_the_cuda_layer_not_torch(monkeypatch):
    from fomm_deploy.export import exporter

    assert exporter.device_count is cuda_layer.device_count  # the CUDA layer's count, not torch's
    monkeypatch.setattr(exporter, "tensorrt_missing", lambda: [])
    monkeypatch.setattr(exporter, "device_count", lambda: 0)
    with pytest.raises(FommError, match="a CUDA GPU visible to this process"):
        exporter.check_engine_prerequisites()
    monkeypatch.setattr(exporter, "device_count", lambda: 1)
    exporter.check_engine_prerequisites()


class _Session:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


def test_a_dropped_provider_is_an_error_or_a_clear_warning(tmp_path):
    path = tmp_path / "generator.onnx"
    with pytest.raises(BackendUnavailableError, match="could not use cuda for generator.onnx"):
        check_providers(_Session(["CPUExecutionProvider"]), ["CUDAExecutionProvider"], path)
    with pytest.warns(RuntimeWarning, match="could not use tensorrt for generator.onnx and runs it on cuda, cpu"):
        check_providers(_Session(["CUDAExecutionProvider", "CPUExecutionProvider"]),
                        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_providers(_Session(["CPUExecutionProvider"]), ["CPUExecutionProvider"], path)


def test_tensorrt_ep_gets_caches_and_a_batch_profile(exported, monkeypatch, tmp_path):
    spec = exported.specs["generator"]
    options = tensorrt_ep_options(spec, exported.dir / "generator.fp16.onnx", cache_dir=tmp_path)
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"]
    assert options["trt_engine_cache_path"].startswith(str(tmp_path / "ort-tensorrt"))
    assert "trt_fp16_enable" not in options  # would stop the EP building strongly typed
    shapes = "source:{b}x3x128x128,kp_source_value:{b}x10x2,kp_source_jacobian:{b}x10x2x2," \
             "kp_driving_value:{b}x10x2,kp_driving_jacobian:{b}x10x2x2"
    assert options["trt_profile_min_shapes"] == options["trt_profile_opt_shapes"] == shapes.format(b=1)
    assert options["trt_profile_max_shapes"] == shapes.format(b=8)
    seen = {}

    def fake_session(path, providers, threads, provider_options):
        seen.update(provider_options)
        raise BackendUnavailableError("stop here")

    monkeypatch.setattr(onnxrt, "_trt_ep_available", lambda: True)
    monkeypatch.setattr(onnxrt, "session_from_onnx", fake_session)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    backend = OrtBackend(spec, exported.dir / "generator.onnx", providers=("tensorrt", "cuda", "cpu"),
                         provider_options={"tensorrt": {"trt_max_workspace_size": 1 << 30}})
    with pytest.raises(BackendUnavailableError):
        backend.activate()
    assert seen["tensorrt"]["trt_max_workspace_size"] == 1 << 30  # the caller's own options are kept
    assert seen["tensorrt"]["trt_profile_opt_shapes"].startswith("source:1x3x128x128")


# ---- the real thing (skipped here: no TensorRT, no GPU) ------------------------------------------------


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_engine_profile_and_clean_exit(exported, golden_inputs, tmp_path):
    backend = TrtBackend.from_onnx(exported.specs["kp_detector"], exported.dir, "fp32", cache_dir=tmp_path,
                                   batch=(1, 1, 2))
    with backend:
        backend.infer({"image": _frames(golden_inputs, 2)})
        with pytest.raises(InputError, match="outside the engine's profile"):
            backend.infer({"image": _frames(golden_inputs, 3)})


@pytest.mark.gpu
def test_real_cuda_layer_streams_are_non_blocking():
    if "cuda-python" not in cuda_layer.available_layers():
        pytest.skip("needs cuda-python")
    from cuda.bindings import runtime as cudart

    api = cuda_layer.cuda_api()
    api.acquire()
    try:
        s = api.stream()
        err, flags = cudart.cudaStreamGetFlags(s)
        assert err == cudart.cudaError_t.cudaSuccess and flags == cudart.cudaStreamNonBlocking
        api.destroy_stream(s)
        host = api.pinned_empty((4,), np.float32)
        api.free_host(host)
    finally:
        api.release()
