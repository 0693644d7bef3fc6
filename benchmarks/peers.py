"""The peers of ``fomm-bench --peers``: what a CPU user could run instead of fomm-deploy, timed in the same run
and the same way as the project's paths (the same frames, warm-up and steps; median / p90 / p99, peak RSS, the
convolution work and, with --peak, the floor). Each peer's compile time is reported apart from its steps, and
its prediction is compared with upstream eager's on the same frames (:func:`parity`), so a peer that computes
something else cannot win unnoticed.

* ``torch-compile`` fp32 and bf16: upstream's ``kp_detector`` and ``generator`` modules under ``torch.compile``
  (Inductor, default mode), in the baseline's own loop (``bench.upstream_loop``: keypoints of the driving
  frame, ``normalize_kp``, generator). bf16 runs under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and
  only on a CPU with native bf16 instructions (avx512_bf16 or amx_bf16): elsewhere oneDNN emulates bf16,
  which no user would pick over fp32, so the row is skipped with that reason.
* ``openvino`` fp32, bf16, int8 and int8+bf16: the OpenVINO runtime (``pip install openvino``, the ``peers``
  extra) on the export's per-source split graphs, the ones the project's ``split`` path runs (keypoint
  detector and ``generator_frame`` per frame, ``source_encoder`` once per source), through the same Animator
  glue. fp32 and bf16 run the fp32 files with ``INFERENCE_PRECISION_HINT`` f32 / bf16 (bf16 only where the
  CPU plugin lists BF16 in ``OPTIMIZATION_CAPABILITIES``); int8 runs the int8 files (their float remainder
  at f32, or at bf16 for int8+bf16). The row records the runtime precision of its convolutions, as OpenVINO's
  compiled model reports them, so a bf16 or int8 row shows that it ran so.

``onnxruntime-ep-openvino`` is not used: it exposes no device on AMD CPUs; the ``openvino`` runtime does.
"""

from __future__ import annotations

import collections
import gc
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from fomm_deploy.runtime.animator import Animator
from fomm_deploy.runtime.backends.base import Backend
from fomm_deploy.runtime.core.compare import psnr
from fomm_deploy.runtime.core.contract import GraphSpec
from fomm_deploy.runtime.core.errors import ContractError

from .bench import Entry, Skipped, _peak_rss_mb, _reset_peak_rss, _summary, close_animator, predict_frames, \
    time_animator, timed_calls, upstream_loop

# (backend, precision, graphs) of every peer, in the order they run.
PEERS = (("torch-compile", "fp32", "upstream"), ("torch-compile", "bf16", "upstream"),
         ("openvino", "fp32", "split"), ("openvino", "bf16", "split"),
         ("openvino", "int8", "split"), ("openvino", "int8+bf16", "split"))
OPENVINO_MISSING = "openvino is not installed: pip install openvino (or pip install 'fomm-deploy[peers]')"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> str | None:
    """None when the CPU (``flags``, default this one's) computes bf16 natively; otherwise why not."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "cannot tell whether this CPU has native bf16 (no /proc/cpuinfo flags)"
    if flags & set(BF16_FLAGS):
        return None
    return (f"this CPU has no native bf16 ({' / '.join(BF16_FLAGS)}); emulated bf16 runs slower than fp32, so it "
            "is not a peer")


def parity(prediction: np.ndarray, reference: np.ndarray) -> dict:
    """A peer's predictions against upstream eager's on the same frames ((N, 3, H, W) in [0, 1]): the largest
    absolute difference and the PSNR in dB (None when identical)."""
    value = psnr(prediction, reference)
    return {"frames": int(len(reference)), "max_abs_diff": float(np.abs(prediction - reference).max()),
            "psnr_db": None if math.isinf(value) else round(value, 2)}


# -- torch.compile of upstream's modules --------------------------------------------------------------------


def bench_torch_compile(ckpt: Path, cfg, source: np.ndarray, frames: np.ndarray, reference: np.ndarray, *,
                        bf16: bool, warmup: int, iters: int, threads: int) -> Entry | Skipped:
    """Upstream's loop with its two modules under ``torch.compile`` (with ``bf16``, under bf16 autocast). The
    first calls compile: the source and reference keypoints and the first step are timed as ``compile_s`` and
    left out of the step times; then ``warmup`` and ``iters`` steps as for every path."""
    import contextlib

    import torch

    from fomm_deploy.runtime.core.fileio import user_cache_dir
    from fomm_deploy.training.checkpoint import load_checkpoint

    precision = "bf16" if bf16 else "fp32"
    if bf16 and (why := native_bf16()):
        return Skipped("torch-compile", precision, "upstream", why)
    torch.set_num_threads(threads)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(user_cache_dir("torch-compile")))
    torch._dynamo.reset()
    models = load_checkpoint(ckpt, cfg).models
    kp_det, gen = torch.compile(models.kp_detector), torch.compile(models.generator)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    counters = torch._dynamo.utils.counters
    graphs_before, breaks_before = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    _reset_peak_rss()
    with torch.no_grad(), autocast:
        t0 = time.perf_counter()
        try:
            step, stages, predict = upstream_loop(kp_det, gen, source, frames)
            step()
        except Exception as exc:  # Inductor needs a C++ compiler, and raises its own types when it fails
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return Skipped("torch-compile", precision, "upstream", f"torch.compile failed here: {first}")
        compile_s = time.perf_counter() - t0
        detail = {"graphs compiled": counters["stats"]["unique_graphs"] - graphs_before,
                  "graph breaks": sum(counters["graph_break"].values()) - breaks_before}
        if bf16:
            detail["autocast"] = "bf16, native (" + " / ".join(sorted(set(BF16_FLAGS) & cpu_flags())) + ")"
        for v in stages.values():
            v.clear()
        times = timed_calls(step, warmup, iters)
        peak = _peak_rss_mb()
        predictions = np.concatenate([predict(f) for f in frames])
    med, p90, p99, stage_ms = _summary(times, stages, warmup)
    del models, kp_det, gen, step, predict
    torch._dynamo.reset()
    gc.collect()
    return Entry("torch-compile", precision, "upstream", med, p90, p99, 1000 / med, peak, stage_ms,
                 compile_s=compile_s, detail=detail, parity=parity(predictions, reference))


# -- OpenVINO on the exported graphs ------------------------------------------------------------------------


def openvino_missing() -> str | None:
    """None when the ``openvino`` runtime imports; otherwise the reason, with the install command."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return OPENVINO_MISSING
    return None


class OpenVinoBackend(Backend):
    """One exported graph on OpenVINO's CPU plugin, for the peers (not a deployment backend of the project).

    ``config``: the properties ``openvino.Core().compile_model`` gets (``INFERENCE_PRECISION_HINT``, ...).
    """

    kind = "openvino"

    def __init__(self, spec: GraphSpec, onnx_path: Path, config: dict, *, core=None) -> None:
        super().__init__(spec)
        self.onnx_path = Path(onnx_path)
        self.config = dict(config)
        self.core = core
        self.compiled = None
        self.request = None

    def _activate(self) -> None:
        import openvino

        core = self.core or openvino.Core()
        self.compiled = core.compile_model(str(self.onnx_path), "CPU", self.config)
        names = sorted(i.get_any_name() for i in self.compiled.inputs)
        if names != sorted(self.spec.input_names):
            raise ContractError(f"{self.onnx_path} has inputs {names} in OpenVINO, the contract says "
                                f"{self.spec.input_names}")
        self.outputs = {o.get_any_name(): o for o in self.compiled.outputs}
        self.request = self.compiled.create_infer_request()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.request.infer(feed)
        return {n: self.request.get_tensor(self.outputs[n]).data for n in self.spec.output_names}

    def _deactivate(self) -> None:
        self.request = self.compiled = None

    def conv_precisions(self) -> collections.Counter:
        """How many convolutions of the compiled graph run at each runtime precision (``u8``, ``bf16``, ...)."""
        counts: collections.Counter = collections.Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in ("Convolution", "GroupConvolution"):
                counts[info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"] += 1
        return counts


def bench_openvino(exported, precision: str, source: np.ndarray, frames: np.ndarray, reference: np.ndarray, *,
                   warmup: int, iters: int, threads: int) -> Entry | Skipped:
    """OpenVINO on the split graphs at ``precision`` (``fp32``, ``bf16``, ``int8``, ``int8+bf16``; see the
    module's docstring), through the Animator, timed by ``bench.time_animator``."""
    if why := openvino_missing():
        return Skipped("openvino", precision, "split", why)
    import openvino

    files = "int8" if precision.startswith("int8") else "fp32"
    hint = "bf16" if precision.endswith("bf16") else "f32"
    if not exported.has_split(files):
        return Skipped("openvino", precision, "split", f"the export has no {files} split graphs (fomm-export "
                       f"--precision {'all' if files == 'int8' else 'fp32'})")
    core = openvino.Core()
    if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return Skipped("openvino", precision, "split", "OpenVINO's CPU plugin offers no bf16 on this CPU "
                       "(no BF16 in OPTIMIZATION_CAPABILITIES)")
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}

    def backend(graph: str) -> OpenVinoBackend:
        path = exported.manifest.verified_graph(exported.dir, graph, files)
        return OpenVinoBackend(exported.specs[graph], path, config, core=core)

    _reset_peak_rss()
    t0 = time.perf_counter()
    try:
        kp, encoder, gen = (backend(g).activate() for g in ("kp_detector", "source_encoder", "generator_frame"))
    except RuntimeError as exc:  # OpenVINO reports a graph it cannot read or compile as a RuntimeError
        first = (str(exc).strip().splitlines() or ["RuntimeError"])[0][:300]
        return Skipped("openvino", precision, "split", f"OpenVINO cannot compile the {files} graphs: {first}")
    compile_s = time.perf_counter() - t0
    animator = Animator(kp, None, exported.frame_size, source_encoder=encoder, generator_frame=gen, relative=True,
                        adapt_scale=True)
    entry = time_animator(animator, "openvino", precision, "split", source, frames, warmup=warmup, iters=iters)
    predictions = predict_frames(animator, frames)
    convs = kp.conv_precisions() + gen.conv_precisions()
    inference = gen.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    close_animator(animator)
    entry.files, entry.compile_s, entry.parity = files, compile_s, parity(predictions, reference)
    entry.detail = {"inference precision": inference, "per-frame convolutions at": dict(sorted(convs.items()))}
    return entry


def run_peers(ckpt: Path, exported, source: np.ndarray, frames: np.ndarray, reference: np.ndarray, *, warmup: int,
              iters: int, threads: int, log: Callable[[str], None] = print) -> Iterator[Entry | Skipped]:
    """Every peer of :data:`PEERS`, measured or skipped with the reason, against upstream eager's ``reference``
    predictions of ``frames`` (``bench.run_upstream``)."""
    for backend, precision, _ in PEERS:
        log(f"peer: {backend} {precision} ...")
        if backend == "torch-compile":
            yield bench_torch_compile(ckpt, exported.config, source, frames, reference, bf16=precision == "bf16",
                                      warmup=warmup, iters=iters, threads=threads)
        else:
            yield bench_openvino(exported, precision, source, frames, reference, warmup=warmup, iters=iters,
                                 threads=threads)
