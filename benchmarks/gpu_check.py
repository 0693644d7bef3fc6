"""One prepared check of everything GPU-side that can run without TensorRT: ``make gpu-check``.

    python -m fomm_deploy.benchmarks.gpu_check [--out benchmarks/results] [--smoke] [--golden DIR]
        [--demo-ckpt FILE]

Sections (each writes its result into ``gpu-<gpu name>.json`` and ``.md`` as soon as it finishes; one failing
section does not lose the others):

1. ``cuda_layer``: ``runtime/backends/cuda.py``'s cuda-python layer for real: allocation, pinned host buffers,
   round trips with bandwidth at a vox-256 frame's size and at 64 MB, a stream, CUDA-graph capture and replay,
   use from a second thread, freeing.
2. ``trt_logic``: ``TrtBackend`` (buffers per batch, copies, CUDA-graph capture of ``execute_async_v3``) over
   a TensorRT API stand-in whose ``execute_async_v3`` launches real CUDA work (device-to-device copies and a
   memset) on the stream it is given; the outputs are checked against what that work must produce.
3. ``fp16_numerics``: the fp16 policy of the fp16 graphs (``runtime/core/precision.py``: its scopes in half,
   keypoint detector fp32) in real CUDA half precision against fp32 on the same GPU: golden fixture, bundled model,
   vox-256 with random weights; keypoint px and PSNR against ``FP16_BUDGET``.
4. ``latency``: vox-256 at batch 1 with CUDA events: fp32 (TF32 allowed), fp32 without TF32, fp16 policy,
   + channels-last, + CUDA graphs; per graph and the whole frame step including host<->device copies.

``--smoke`` runs the same code paths on the CPU in a minute or two: tiny sizes, a host-memory stand-in for
the CUDA layer where CUDA is absent, CPU half precision, no vox-256 numerics. Needs torch, onnx, onnxruntime;
cuda-python only for section 1/2 on a GPU. Installs nothing. Section 3 needs the golden fixture and the demo
model, which a source checkout has and an installed package does not: ``--golden`` and ``--demo-ckpt`` name
them elsewhere, and without them the check stops before it starts, saying so.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fomm_deploy.benchmarks.bench import timed_calls
from fomm_deploy.runtime.backends import cuda as cuda_module
from fomm_deploy.runtime.backends.cuda import CudaApi, CudaPythonApi, available_layers
from fomm_deploy.runtime.backends.tensorrt import TrtBackend
from fomm_deploy.runtime.backends.torch_ref import TorchBackend, apply_fp16_policy
from fomm_deploy.runtime.core.compare import compare
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.precision import FP16_BUDGET

# Where a source checkout keeps the two models section 3 checks (an installed package has neither): the
# golden fixture (a folder holding checkpoint.pth.tar; the tests' FOMM_GOLDEN_DIR names it elsewhere) and
# the demo model. Found there only when this module runs from a checkout; else --golden / --demo-ckpt.
_CHECKOUT = Path(__file__).resolve().parents[1]
GOLDEN_FILE = "checkpoint.pth.tar"
CHECKOUT_GOLDEN = _CHECKOUT / "tests" / "data" / "golden-small"
CHECKOUT_DEMO_CKPT = _CHECKOUT / "checkpoints" / "synthetic-faces.pth.tar"
MB = 1 << 20


class FixtureMissing(Exception):
    """A model that section 3 checks is not where it was looked for; the message says how to name it."""


def golden_checkpoint(given: Path | None, environ: dict[str, str]) -> Path:
    """The golden fixture's checkpoint: from ``--golden`` (the fixture's folder, or its checkpoint file),
    else ``FOMM_GOLDEN_DIR``, else the source checkout's ``tests/data/golden-small``.

    Raises:
        FixtureMissing: no checkpoint there.
    """
    if given is not None:
        where, how = given, f"--golden {given}"
    elif environ.get("FOMM_GOLDEN_DIR"):
        where, how = Path(environ["FOMM_GOLDEN_DIR"]), f"FOMM_GOLDEN_DIR={environ['FOMM_GOLDEN_DIR']}"
    else:
        where, how = CHECKOUT_GOLDEN, "the default (a source checkout's tests/data/golden-small)"
    ckpt = where / GOLDEN_FILE if where.is_dir() else where
    if not ckpt.is_file():
        raise FixtureMissing(f"the golden fixture's {GOLDEN_FILE} is not at {ckpt} (from {how}); an installed "
                             "package does not hold tests/data: pass --golden with the golden-small folder of a "
                             "checkout (or set FOMM_GOLDEN_DIR), or leave fp16_numerics out of --sections")
    return ckpt


def demo_checkpoint(given: Path | None) -> Path:
    """The demo model's checkpoint: ``--demo-ckpt``, else the source checkout's ``checkpoints/``.

    Raises:
        FixtureMissing: no file there.
    """
    ckpt = given if given is not None else CHECKOUT_DEMO_CKPT
    if not ckpt.is_file():
        how = f"--demo-ckpt {given}" if given is not None else "the default (a source checkout's checkpoints/)"
        raise FixtureMissing(f"the demo model's checkpoint is not at {ckpt} (from {how}); pass --demo-ckpt "
                             "with checkpoints/synthetic-faces.pth.tar of a checkout, or leave fp16_numerics "
                             "out of --sections")
    return ckpt


# ---------------------------------------------------------------------------------------------------------
# A host-memory stand-in for the CUDA layer (smoke mode without CUDA): same interface as runtime/backends/cuda.py
# ---------------------------------------------------------------------------------------------------------


def _host_stand_in_class():
    return CudaApi


class HostCudaStandIn(_host_stand_in_class()):
    """``CudaApi`` over host memory: pointers index bytearrays; work captured between begin/end_capture is
    recorded and replayed by launch_graph, so the capture logic is exercised too. It implements the whole
    ``CudaApi`` interface (context per thread included), so the TensorRT backend's lifecycle runs on it."""

    name = "host-stand-in"

    def __init__(self) -> None:
        super().__init__()
        self.mem: dict[int, bytearray] = {}
        self._next = 0x1000
        self._capturing: list[Callable[[], None]] | None = None
        self.freed = 0

    def _run(self, op: Callable[[], None]) -> None:
        if self._capturing is not None:
            self._capturing.append(op)
        else:
            op()

    def _locate(self, ptr: int) -> tuple[bytearray, int]:
        for base, buf in self.mem.items():
            if base <= ptr < base + len(buf):
                return buf, ptr - base
        raise RuntimeError(f"invalid device pointer {ptr:#x}")

    def malloc(self, nbytes: int) -> int:
        ptr = self._next
        self.mem[ptr] = bytearray(max(1, nbytes))
        self._next += max(1, nbytes) + 256
        return ptr

    def free(self, ptr: int) -> None:
        del self.mem[ptr]
        self.freed += 1

    def pinned_empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def free_host(self, array: np.ndarray) -> None:
        self.freed += 1

    def stream(self) -> int:
        return 1

    def destroy_stream(self, stream: int) -> None:
        pass

    def _enter_thread(self) -> None:
        pass

    def htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        data = src  # the copy reads the host buffer when it runs (as the GPU would)

        def op():
            buf, off = self._locate(dst)
            buf[off:off + data.nbytes] = data.tobytes()
        self._run(op)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        def op():
            buf, off = self._locate(src)
            dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(buf[off:off + dst.nbytes]), np.uint8)
        self._run(op)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        def op():
            sbuf, soff = self._locate(src)
            dbuf, doff = self._locate(dst)
            dbuf[doff:doff + nbytes] = sbuf[soff:soff + nbytes]
        self._run(op)

    def memset_async(self, dst: int, value: int, nbytes: int, stream: int) -> None:
        def op():
            buf, off = self._locate(dst)
            buf[off:off + nbytes] = bytes([value]) * nbytes
        self._run(op)

    def synchronize(self, stream: int) -> None:
        pass

    def device_facts(self) -> tuple[str, str]:
        return "host stand-in", "0.0"

    def begin_capture(self, stream: int) -> None:
        self._capturing = []

    def end_capture(self, stream: int):
        ops, self._capturing = self._capturing, None
        return ops, ops  # (graph, graph_exec), as the CUDA layer returns them

    def abort_capture(self, stream: int) -> None:
        self._capturing = None

    def launch_graph(self, graph_exec, stream: int) -> None:
        for op in graph_exec:
            op()

    def destroy_graph(self, graph, graph_exec) -> None:
        pass


def _cuda_python_extras(api) -> None:
    """Device-to-device copy and memset for the cuda-python layer (what the TensorRT stand-in launches)."""
    rt = api._rt

    def dtod_async(dst: int, src: int, nbytes: int, stream: int) -> None:
        api._check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))

    def memset_async(dst: int, value: int, nbytes: int, stream: int) -> None:
        api._check(rt.cudaMemsetAsync(dst, value, nbytes, stream))

    api.dtod_async, api.memset_async = dtod_async, memset_async


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def cuda_layer(smoke: bool):
    """The real cuda-python layer when CUDA and cuda-python are there; else (smoke only) the host stand-in."""
    if _has_cuda() and "cuda-python" in available_layers():
        api = CudaPythonApi()
        _cuda_python_extras(api)
        return api
    if not smoke:
        raise RuntimeError("needs a CUDA GPU and cuda-python (cuda.bindings); run with --smoke on a CPU machine")
    return HostCudaStandIn()


# ---------------------------------------------------------------------------------------------------------
# Section 1: the CUDA layer
# ---------------------------------------------------------------------------------------------------------


def _round_trip(api, nbytes: int, repeats: int) -> dict[str, float]:
    stream = api.stream()
    n = nbytes // 4
    host = api.pinned_empty((n,), np.float32)
    back = api.pinned_empty((n,), np.float32)
    host[:] = np.arange(n, dtype=np.float32) % 1000
    ptr = api.malloc(nbytes)
    h2d, d2h = [], []
    try:
        for _ in range(repeats):
            back[:] = -1
            t0 = time.perf_counter()
            api.htod_async(ptr, host, stream)
            api.synchronize(stream)
            t1 = time.perf_counter()
            api.dtoh_async(back, ptr, stream)
            api.synchronize(stream)
            t2 = time.perf_counter()
            h2d.append(t1 - t0)
            d2h.append(t2 - t1)
            if not np.array_equal(back, host):
                raise AssertionError(f"round trip of {nbytes} bytes changed the data")
    finally:
        api.free(ptr)
    return {"bytes": nbytes, "h2d_GBps": nbytes / statistics.median(h2d) / 1e9,
            "d2h_GBps": nbytes / statistics.median(d2h) / 1e9, "h2d_ms": statistics.median(h2d) * 1e3,
            "d2h_ms": statistics.median(d2h) * 1e3}


def check_cuda_layer(smoke: bool) -> dict[str, Any]:
    api = cuda_layer(smoke)
    out: dict[str, Any] = {"layer": api.name, "device": list(api.device_facts())}
    frame = 3 * 256 * 256 * 4
    out["frame_round_trip"] = _round_trip(api, frame, 5 if smoke else 50)
    out["large_round_trip"] = _round_trip(api, (4 if smoke else 64) * MB, 2 if smoke else 10)  # 64 MB (smoke: 4)
    # CUDA-graph capture of h2d -> d2d -> d2h, replayed with new host data each time
    stream = api.stream()
    n = 4096
    host, back = api.pinned_empty((n,), np.float32), api.pinned_empty((n,), np.float32)
    a, b = api.malloc(n * 4), api.malloc(n * 4)
    api.begin_capture(stream)
    api.htod_async(a, host, stream)
    api.dtod_async(b, a, n * 4, stream)
    api.dtoh_async(back, b, stream)
    graph, graph_exec = api.end_capture(stream)
    for i in range(3):
        host[:] = i + np.arange(n)
        back[:] = -1
        api.launch_graph(graph_exec, stream)
        api.synchronize(stream)
        if not np.array_equal(back, host):
            raise AssertionError(f"CUDA-graph replay {i} did not reproduce the captured copies")
    api.destroy_graph(graph, graph_exec)
    out["cuda_graph"] = "captured h2d + d2d + d2h, 3 replays with new host data, destroyed: ok"
    api.free(a)
    api.free(b)
    # a second thread: its own layer object (cudaSetDevice is per thread), a round trip there
    errors: list[str] = []

    def worker():
        try:
            other = cuda_layer(smoke)
            _round_trip(other, frame, 2)
        except Exception as exc:  # reported below
            errors.append(f"{type(exc).__name__}: {exc}")
    t = threading.Thread(target=worker)
    t.start()
    t.join(60)
    if t.is_alive() or errors:
        raise AssertionError(f"second thread: {errors or 'hung'}")
    out["second_thread"] = "round trip from another thread: ok"
    out["freeing"] = "every allocation freed without error"
    return out


# ---------------------------------------------------------------------------------------------------------
# Section 2: TrtBackend over a TensorRT API stand-in that launches real CUDA work
# ---------------------------------------------------------------------------------------------------------


def tensorrt_stand_in(api, spec) -> types.ModuleType:
    """A ``tensorrt`` module with what ``TrtBackend`` uses. ``execute_async_v3(stream)`` enqueues, on that stream,
    for every output: a copy of the leading bytes of the first input, the rest set to 0x3f bytes."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "stand-in"
    names = spec.input_names + spec.output_names

    class Logger:
        WARNING = 2

        def __init__(self, level=None):
            self.level = level

    class Context:
        def __init__(self):
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.launches = 0

        def set_input_shape(self, name, shape):
            if not 1 <= shape[0] <= 8:  # the profile: batch 1..8
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = self.shapes[spec.inputs[0].name][0]
            return next(t for t in spec.outputs if t.name == name).concrete_shape(batch)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream):
            batch = self.shapes[spec.inputs[0].name][0]
            first = spec.inputs[0]
            in_bytes = int(np.prod(first.concrete_shape(batch))) * 4
            for t in spec.outputs:
                nbytes = int(np.prod(t.concrete_shape(batch))) * 4
                n = min(nbytes, in_bytes)
                api.dtod_async(self.addresses[t.name], self.addresses[first.name], n, stream)
                if nbytes > n:
                    api.memset_async(self.addresses[t.name] + n, 0x3F, nbytes - n, stream)
            self.launches += 1
            return True

    class TensorIOMode:
        INPUT, OUTPUT = 1, 2

    class DataType:
        FLOAT = "float32"

    def nptype(dtype):
        return np.dtype(dtype).type

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in spec.input_names else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile):
            t = next(x for x in spec.inputs if x.name == name)
            return [t.concrete_shape(1), t.concrete_shape(1), t.concrete_shape(8)]

        def create_execution_context(self):
            trt.last_context = Context()
            return trt.last_context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine() if blob.startswith(b"stand-in engine") else None

    trt.Logger, trt.Runtime, trt.TensorIOMode, trt.DataType, trt.nptype = Logger, Runtime, TensorIOMode, DataType, nptype
    return trt


def _expected_outputs(spec, feed) -> dict[str, np.ndarray]:
    first = np.ascontiguousarray(feed[spec.inputs[0].name], np.float32).view(np.uint8).reshape(-1)
    batch = feed[spec.inputs[0].name].shape[0]
    out = {}
    for t in spec.outputs:
        shape = t.concrete_shape(batch)
        nbytes = int(np.prod(shape)) * 4
        raw = np.full(nbytes, 0x3F, np.uint8)
        n = min(nbytes, first.size)
        raw[:n] = first[:n]
        out[t.name] = raw.view(np.float32).reshape(shape)
    return out


def check_trt_logic(smoke: bool, tmp: Path) -> dict[str, Any]:
    api = cuda_layer(smoke)
    cfg = resolve_config("tiny-test")
    engine = tmp / "stand-in.engine"
    engine.write_bytes(b"stand-in engine")
    results: dict[str, Any] = {"layer": api.name}
    saved_module, saved_api = sys.modules.get("tensorrt"), cuda_module.cuda_api
    try:
        cuda_module.cuda_api = lambda: api
        for graph in ("kp_detector", "generator_frame"):
            spec = graph_specs(cfg)[graph]
            sys.modules["tensorrt"] = trt = tensorrt_stand_in(api, spec)
            rng = np.random.default_rng(0)
            for cuda_graph in (False, True):
                backend = TrtBackend(spec, engine, cuda_graph=cuda_graph).activate()
                for batch in (1, 2, 2, 1):  # reallocation on batch change, replay on repeat
                    feed = {t.name: rng.random(t.concrete_shape(batch), dtype=np.float32) for t in spec.inputs}
                    got = backend.infer(feed)
                    for name, want in _expected_outputs(spec, feed).items():
                        if not np.array_equal(got[name].view(np.uint8), want.view(np.uint8)):
                            raise AssertionError(f"{graph} cuda_graph={cuda_graph} batch {batch}: '{name}' is not "
                                                 "what the launched CUDA work wrote")
                launches = trt.last_context.launches
                backend.deactivate()
                # with CUDA graphs, execute_async_v3 runs on the warm-up and at capture only, then replays
                results[f"{graph}.cuda_graph={cuda_graph}"] = {"ok": True, "execute_async_v3_calls": launches}
    finally:
        cuda_module.cuda_api = saved_api
        if saved_module is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = saved_module
    return results


# ---------------------------------------------------------------------------------------------------------
# Section 3: fp16 numerics in real half precision
# ---------------------------------------------------------------------------------------------------------


def _module(ckpt, cfg, graph: str, device: str, half: bool, channels_last: bool = False):
    import torch

    from fomm_deploy.training.model.wrappers import flat_module

    models = _load(ckpt, cfg, device)
    module = flat_module(graph, models, cfg.estimate_jacobian).eval().to(device)
    if half:
        apply_fp16_policy(module, graph)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def _load(ckpt, cfg, device):
    """The models of ``ckpt`` (a path), or random weights (seed 0) when ``ckpt`` is None."""
    import torch

    from fomm_deploy.training.checkpoint import load_checkpoint
    from fomm_deploy.training.model import build_models

    if ckpt is None:
        torch.manual_seed(0)
        models = build_models(cfg)
        for m in (models.generator, models.kp_detector):
            m.to(device).eval()
        return models
    return load_checkpoint(ckpt, cfg, device=device).models


def check_fp16_numerics(smoke: bool, golden: Path, demo: Path) -> dict[str, Any]:
    import torch

    from fomm_deploy.export.inputs import sample_feeds

    device = "cuda" if _has_cuda() else "cpu"
    models_to_check = [("golden-small", golden, "tiny-test"), ("synthetic-faces", demo, "synthetic-faces")]
    if not smoke:
        models_to_check.append(("vox-256 (random weights)", None, "vox-256"))
    out: dict[str, Any] = {"device": device, "budget": FP16_BUDGET.to_dict(),
                           "policy": "runtime/core/precision.py: FP16_SCOPES in half, kp_detector fp32 (FP32_AT_FP16)"}
    for label, ckpt, config in models_to_check:
        cfg = resolve_config(config)
        feeds = sample_feeds(_load(ckpt, cfg, "cpu"), cfg, 2, 1)
        rows = {}
        for graph in ("kp_detector", "generator", "generator_frame"):
            spec = graph_specs(cfg)[graph]
            args = [torch.from_numpy(feeds[graph][n]).to(device) for n in spec.input_names]
            results = {}
            for variant, half in (("fp32", False), ("fp16", True)):
                with torch.no_grad():
                    o = _module(ckpt, cfg, graph, device, half)(*args)
                o = o if isinstance(o, tuple) else (o,)
                results[variant] = {n: t.float().cpu().numpy() for n, t in zip(spec.output_names, o)}
            c = compare(f"{label} {graph} fp16 policy vs fp32 on {device}", results["fp16"], results["fp32"],
                        precision="fp16", frame_size=cfg.frame_size)
            c.budget_failures(FP16_BUDGET)
            rows[graph] = c.to_dict()
            if graph == "kp_detector":  # what the policy avoids: the keypoint hourglass in half
                from fomm_deploy.training.model.wrappers import flat_module

                module = flat_module(graph, _load(ckpt, cfg, device), cfg.estimate_jacobian).eval()
                module.kp_detector.predictor.half()
                module.kp_detector.predictor.register_forward_pre_hook(lambda m, a: tuple(x.half() for x in a))
                module.kp_detector.predictor.register_forward_hook(lambda m, a, y: y.float())
                with torch.no_grad():
                    o = module(*args)
                h = compare("kp hourglass half", {n: t.float().cpu().numpy() for n, t in zip(spec.output_names, o)},
                            results["fp32"], precision="fp16", frame_size=cfg.frame_size)
                rows["kp_detector (hourglass in half, not the policy)"] = {"kp_max_px": h.kp_max_px}
        out[label] = rows
    failed = [f"{label}/{g}" for label, _, _ in models_to_check for g, r in out[label].items() if r.get("passed") is False]
    out["all_within_budget"] = not failed
    if failed:
        out["over_budget"] = failed
    return out


# ---------------------------------------------------------------------------------------------------------
# Section 4: latency
# ---------------------------------------------------------------------------------------------------------


def _time_gpu(fn: Callable[[], Any], iters: int, cuda: bool) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, perf_counter otherwise)."""
    import torch

    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def check_latency(smoke: bool, tmp: Path) -> dict[str, Any]:
    import torch

    from fomm_deploy.export.inputs import sample_feeds
    from fomm_deploy.training.checkpoint import save_checkpoint

    cuda = _has_cuda()
    device = "cuda" if cuda else "cpu"
    config = "tiny-test" if smoke else "vox-256"
    cfg = resolve_config(config)
    models = _load(None, cfg, "cpu")
    ckpt = save_checkpoint(tmp / f"{config}-random.pth.tar", generator=models.generator, kp_detector=models.kp_detector)
    feeds = sample_feeds(models, cfg, 1, 2)
    del models
    specs = graph_specs(cfg)
    # All eager (the torch backend compiles by default on CUDA): FRAME_STEP_PATHS times torch.compile.
    variants = [("fp32 eager (TF32 allowed)", dict(precision="fp32", tf32=True, channels_last=False, cuda_graph=False,
                                                   compile=False)),
                ("fp32 eager, no TF32", dict(precision="fp32", tf32=False, channels_last=False, cuda_graph=False,
                                             compile=False)),
                ("fp16 policy", dict(precision="fp16", channels_last=False, cuda_graph=False, compile=False)),
                ("fp16 policy + channels-last", dict(precision="fp16", channels_last=True, cuda_graph=False,
                                                     compile=False)),
                ("fp16 policy + channels-last + CUDA graphs", dict(precision="fp16", channels_last=True,
                                                                  cuda_graph=True, compile=False))]
    iters, warm = (3, 1) if smoke else (50, 10)
    out: dict[str, Any] = {"config": config, "device": device, "batch": 1, "iters": iters,
                           "timer": "CUDA events" if cuda else "perf_counter", "variants": {}}
    for label, opts in variants:
        if not cuda and (opts["precision"] == "fp16" or opts["cuda_graph"]):
            out["variants"][label] = {"skipped": "needs CUDA"}
            continue
        row: dict[str, Any] = {}
        backends = {g: TorchBackend(specs[g], ckpt, cfg, device=device, **opts).activate()
                    for g in ("kp_detector", "source_encoder", "generator_frame")}
        encoded = backends["source_encoder"].infer(feeds["source_encoder"])
        frame_feed = dict(feeds["generator_frame"], **{k: v.copy() for k, v in encoded.items()})
        for g in ("kp_detector", "generator_frame"):
            b = backends[g]
            feed = frame_feed if g == "generator_frame" else feeds[g]
            args = b.device_inputs(feed)
            run = partial(b.run_device, args)  # the model alone, without the host copies
            with torch.no_grad():
                for _ in range(warm):
                    run()
                row[f"{g}_gpu_ms" if cuda else f"{g}_ms"] = _time_gpu(run, iters, cuda)

        def step():
            backends["kp_detector"].infer(feeds["kp_detector"])
            backends["generator_frame"].infer(frame_feed)
        wall = [t * 1e3 for t in timed_calls(step, warm, iters)]
        row["frame_step_ms (incl. host<->device)"] = statistics.median(wall)
        row["fps"] = 1000 / row["frame_step_ms (incl. host<->device)"]
        for b in backends.values():
            b.deactivate()
        if cuda:
            torch.cuda.empty_cache()
        out["variants"][label] = row
    out["frame_step"] = _frame_step_latency(ckpt, cfg, feeds["frame_step"], smoke, cuda, device, warm, iters)
    return out


# The frame_step paths of the torch backend: the whole frame in one graph, uint8 in and out.
FRAME_STEP_PATHS = [
    ("frame_step, fp32 eager", dict(precision="fp32", channels_last=False, cuda_graph=False, compile=False)),
    ("frame_step, fp16 policy + channels-last + CUDA graph", dict(precision="fp16", channels_last=True,
                                                                 cuda_graph=True, compile=False)),
    ("frame_step, fp16 policy + torch.compile (reduce-overhead)", dict(precision="fp16", channels_last=True,
                                                                      compile=True, compile_mode="reduce-overhead")),
    ("frame_step, fp16 policy + torch.compile (max-autotune-no-cudagraphs) + CUDA graph",
     dict(precision="fp16", channels_last=True, cuda_graph=True, compile=True,
          compile_mode="max-autotune-no-cudagraphs")),
]


def _frame_step_latency(ckpt, cfg, feed: dict[str, np.ndarray], smoke: bool, cuda: bool, device: str, warm: int,
                        iters: int) -> dict[str, Any]:
    """Each :data:`FRAME_STEP_PATHS` path over a batch sweep: wall time of ``infer`` (host copies of the uint8
    frames included), GPU time of the step alone (CUDA events), frames/s, and the compile time apart."""
    import torch

    spec = graph_specs(cfg)["frame_step"]
    batches = (1, 2) if smoke else (1, 2, 4, 8, 16, 32)
    out: dict[str, Any] = {"batches": list(batches), "paths": {}}
    for label, opts in FRAME_STEP_PATHS:
        if not cuda and (opts["precision"] == "fp16" or opts.get("cuda_graph")):
            out["paths"][label] = {"skipped": "needs CUDA"}
            continue
        if not cuda and opts["compile"]:
            out["paths"][label] = {"skipped": "Inductor on the CPU takes minutes; tests/runtime/test_torch_compile.py "
                                              "(--run-slow) checks the compiled path there"}
            continue
        backend = TorchBackend(spec, ckpt, cfg, device=device, **opts).activate()
        rows = {}
        for batch in batches:
            fed = {k: np.ascontiguousarray(np.repeat(v, batch, 0)) for k, v in feed.items()}
            args = backend.device_inputs(fed)
            with torch.no_grad():
                for _ in range(max(warm, 2)):  # the first call of a batch size compiles / captures
                    backend.run_device(args)
                gpu = _time_gpu(partial(backend.run_device, args), iters, cuda)
            wall = statistics.median(t * 1e3 for t in timed_calls(lambda: backend.infer(fed), warm, iters))
            rows[str(batch)] = {"wall_ms": wall, "gpu_ms" if cuda else "step_ms": gpu, "frames_per_s": batch * 1000 / wall}
        out["paths"][label] = {"batches": rows, "compile_s": {str(k[0][0]): v for k, v in backend.compile_seconds.items()}}
        backend.deactivate()
        if cuda:
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    return "cpu-smoke"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['gpu']}", "", f"Command: `{report['command']}`", "",
             f"torch {report['torch']}, Python {report['python']}, {report['platform']}"
             + (" (smoke mode: CPU paths, tiny sizes)" if report["smoke"] else ""), ""]
    for name, sec in report["sections"].items():
        lines.append(f"## {name}: {sec['status']} ({sec.get('seconds', 0):.1f} s)")
        lines.append("")
        if sec["status"] == "failed":
            lines += ["```", sec["error"], "```", ""]
            continue
        if name == "latency" and "result" in sec:
            r = sec["result"]
            lines.append(f"{r['config']}, batch 1, {r['device']}, median of {r['iters']} ({r['timer']})")
            lines.append("")
            keys = sorted({k for v in r["variants"].values() for k in v if k != "skipped"})
            lines.append("| variant | " + " | ".join(keys) + " |")
            lines.append("|---|" + "---|" * len(keys))
            for label, v in r["variants"].items():
                cells = [v.get("skipped", "") if k == keys[0] and "skipped" in v else
                         (f"{v[k]:.2f}" if isinstance(v.get(k), float) else "") for k in keys]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
            steps = r.get("frame_step")
            if steps:
                lines += ["frame_step (one graph, uint8 frames in and out): wall ms incl. host copies / frames/s; "
                          "compile time apart", "",
                          "| path | " + " | ".join(f"batch {b}" for b in steps["batches"]) + " | compile s |",
                          "|---|" + "---|" * (len(steps["batches"]) + 1)]
                for label, v in steps["paths"].items():
                    if "skipped" in v:
                        lines.append(f"| {label} | {v['skipped']} |")
                        continue
                    cells = [f"{v['batches'][str(b)]['wall_ms']:.2f} / {v['batches'][str(b)]['frames_per_s']:.0f}"
                             for b in steps["batches"]]
                    compile_s = ", ".join(f"{s:.0f}" for s in v["compile_s"].values())
                    lines.append(f"| {label} | " + " | ".join(cells) + f" | {compile_s} |")
                lines.append("")
        elif name == "fp16_numerics" and "result" in sec:
            r = sec["result"]
            lines.append(f"on {r['device']}; budget {r['budget']}; {r['policy']}")
            lines.append("")
            lines.append("| model | graph | kp max px | PSNR dB | within budget |")
            lines.append("|---|---|---|---|---|")
            for label, rows in r.items():
                if isinstance(rows, dict) and label not in ("budget",):
                    for g, c in rows.items():
                        if isinstance(c, dict) and ("kp_max_px" in c or "prediction_psnr_db" in c):
                            kp, db = c.get("kp_max_px"), c.get("prediction_psnr_db")
                            lines.append(f"| {label} | {g} | {'' if kp is None else f'{kp:.3f}'} | "
                                         f"{'' if db is None else ('inf' if math.isinf(db) else f'{db:.1f}')} | "
                                         f"{c.get('passed', '')} |")
            lines.append("")
        else:
            lines += ["```json", json.dumps(sec.get("result"), indent=1, default=str)[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def _json_safe(obj):
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results",
                        help="folder of the report (default: benchmarks/results under the current folder)")
    parser.add_argument("--smoke", action="store_true", help="CPU paths at tiny sizes (for make test)")
    parser.add_argument("--sections", default="cuda_layer,trt_logic,fp16_numerics,latency")
    parser.add_argument("--golden", type=Path, default=None,
                        help="the golden fixture for fp16_numerics: its folder (tests/data/golden-small of a "
                             "checkout) or its checkpoint.pth.tar (default: FOMM_GOLDEN_DIR, else the checkout's)")
    parser.add_argument("--demo-ckpt", type=Path, default=None,
                        help="the demo model for fp16_numerics (default: the checkout's "
                             "checkpoints/synthetic-faces.pth.tar)")
    args = parser.parse_args(argv)

    import torch

    gpu = _gpu_name()
    if not args.smoke and gpu == "cpu-smoke":
        print("gpu_check: no CUDA GPU visible to torch; run with --smoke for the CPU paths", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    fixtures: dict[str, Path] = {}
    if "fp16_numerics" in sections:
        try:
            fixtures = {"golden": golden_checkpoint(args.golden, dict(os.environ)),
                        "demo": demo_checkpoint(args.demo_ckpt)}
        except FixtureMissing as exc:
            print(f"gpu_check: {exc}", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu-{_slug(gpu)}"
    report: dict[str, Any] = {"gpu": gpu, "smoke": args.smoke, "torch": torch.__version__,
                              "python": platform.python_version(), "platform": platform.platform(),
                              "command": "python -m fomm_deploy.benchmarks.gpu_check " + " ".join(argv or sys.argv[1:]),
                              "fixtures": {k: str(v) for k, v in fixtures.items()}, "sections": {}}

    def write():
        stem.with_suffix(".json").write_text(json.dumps(_json_safe(report), indent=1, default=str) + "\n")
        stem.with_suffix(".md").write_text(_markdown(report))

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        checks = {"cuda_layer": lambda: check_cuda_layer(args.smoke),
                  "trt_logic": lambda: check_trt_logic(args.smoke, Path(tmp)),
                  "fp16_numerics": lambda: check_fp16_numerics(args.smoke, fixtures["golden"], fixtures["demo"]),
                  "latency": lambda: check_latency(args.smoke, Path(tmp))}
        for name in sections:
            t0 = time.perf_counter()
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                report["sections"][name] = {"status": "ok", "result": checks[name]()}
            except Exception as exc:
                report["sections"][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}\n"
                                                                           + traceback.format_exc()[-3000:]}
            report["sections"][name]["seconds"] = time.perf_counter() - t0
            print(f"gpu_check: {name} {report['sections'][name]['status']} "
                  f"({report['sections'][name]['seconds']:.1f} s)", file=sys.stderr, flush=True)
            write()
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0 if all(s["status"] == "ok" for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
