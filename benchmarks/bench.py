"""Latency benchmark of one animation step, per backend, precision and graph variant, against the baseline
users have today: upstream's eager PyTorch, run as its demo runs it (fp32, batch 1, ``torch.no_grad``).

A *step* animates one driving frame: keypoints of the frame, ``normalize_kp``, generator. Work that
depends only on the source (its keypoints; with the split graphs, its encoding) is done once per source
and reported separately. Speeds are reported as measured in one run; ratios against the baseline of the
same run are what carries over between machines.
"""

from __future__ import annotations

import gc
import importlib.metadata
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fomm_deploy.runtime.backends.cuda import tensorrt_missing
from fomm_deploy.runtime.core.config import FommConfig
from fomm_deploy.runtime.core.fileio import atomic_path, write_image
from fomm_deploy.runtime.core.keypoints import KP, normalize_kp
from fomm_deploy.runtime.core.manifest import graph_file_name, tool_versions
from fomm_deploy.runtime.core.precision import Budget
from fomm_deploy.runtime.graphs import load_exported, open_animator
from fomm_deploy.runtime.media.preprocess import prepare_frame, to_uint8
from fomm_deploy.runtime.media.samples import head_motion, sample_face

from .roofline import Peaks, Work, graph_work, measure_peaks

# Seconds per precision of each peak sample (fomm-bench --peak samples before the first path and after each).
PEAK_SAMPLE_SECONDS = 0.5


# Latency does not depend on the weights (the default is random weights), so the benchmark's own export
# does not judge fp16 / int8 quality: fomm-export does that, with the contract's budgets. fp32 graphs are
# still verified against PyTorch.
LATENCY_ONLY = {p: Budget(kp_max_px=math.inf, prediction_min_psnr_db=-math.inf) for p in ("fp16", "int8")}


@dataclass
class Entry:
    backend: str
    precision: str
    variant: str  # "reference" (kp_detector + generator) or "split" (kp_detector + generator_frame)
    median_ms: float
    p90_ms: float
    p99_ms: float
    fps: float
    peak_mb: float
    stages_ms: dict[str, float] = field(default_factory=dict)  # medians per stage
    once_per_source_ms: dict[str, float] = field(default_factory=dict)
    vs_baseline: float = 0.0  # median_ms / baseline median
    # Convolution work of the step's graphs at batch 1 (roofline.graph_work) and, with measured peaks, the
    # floor (roofline.Peaks.floor_ms) and median / floor.
    int8_gop: float = 0.0
    float_gflop: float = 0.0
    floor_ms: float | None = None
    x_floor: float | None = None
    # With --peak: the peaks this entry's floor used (the mean of the samples just before and after it).
    peaks: dict | None = None
    # Peers (fomm-bench --peers, benchmarks/peers.py): the precision of the graph files it ran when that is not
    # ``precision`` (OpenVINO bf16 runs the fp32 files), its compile time (seconds, not in the step times) and
    # what it ran: torch.compile's graphs and graph breaks, OpenVINO's inference precision and its
    # convolutions per runtime precision. With --peers, every path's prediction against upstream eager's on
    # the same frames (peers.parity).
    files: str | None = None
    compile_s: float | None = None
    detail: dict = field(default_factory=dict)
    parity: dict | None = None


@dataclass
class Skipped:
    """A peer that could not run here, and why (e.g. ``pip install openvino``)."""

    backend: str
    precision: str
    variant: str
    reason: str


def _summary(times_s: list[float], stages: dict[str, list[float]], warmup: int
             ) -> tuple[float, float, float, dict[str, float]]:
    """Median, p90, p99 of the step times and the median of each stage, in ms (warm-up steps left out)."""
    ms = np.array(times_s) * 1000
    stage_ms = {k: float(np.median(v[warmup:]) * 1000) for k, v in stages.items()}
    return float(np.median(ms)), float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), stage_ms


# -- memory: peak resident set size per measured section (Linux: VmHWM, reset through clear_refs) ----------


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- machine -----------------------------------------------------------------------------------------------


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")


def machine_info() -> dict[str, str]:
    """The machine (platform, CPU, cores, GPU) and the tool versions (``manifest.tool_versions``) of a run."""
    info = {"platform": platform.platform(), "cores": str(os.cpu_count())}
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        info["cpu"] = fields.get("model name", platform.processor())
        if "cpu family" in fields:
            info["cpu_family_model"] = f"{fields['cpu family']}/{fields.get('model', '?')}"
        # The instruction sets the kernels depend on: the same model name can be two machine types.
        flags = set(fields.get("flags", "").split())
        info["isa"] = " ".join(f for f in ISA_FLAGS if f in flags) or "none of " + " ".join(ISA_FLAGS)
    except OSError:
        info["cpu"] = platform.processor()
    if shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["gpu"] = res.stdout.strip() or "none"
    else:
        info["gpu"] = "none"
    info.update(tool_versions())
    try:  # the peers' runtime (fomm-bench --peers), when installed
        info["openvino"] = importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        pass
    return info


# -- inputs ------------------------------------------------------------------------------------------------


def bench_frames(cfg: FommConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The bundled portrait and ``n`` frames of synthetic head motion at the model size (float32 HWC)."""
    face = prepare_frame(sample_face(), cfg.frame_size)
    frames = head_motion(face, n + 1, seed=3)
    return frames[0], frames[1:]


def timed_calls(fn: Callable[[], None], warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# -- the baseline: upstream's demo loop in eager PyTorch ---------------------------------------------------


def upstream_loop(kp_det, gen, source: np.ndarray, frames: np.ndarray):
    """Upstream's demo loop over its two modules (call it under ``torch.no_grad`` and any autocast): the
    source's keypoints and the reference keypoints of ``frames[0]`` are computed here, once.

    Returns:
        ``step`` (animates the next of ``frames``, cycling, and records each stage's seconds), ``stages``
        (stage name -> seconds of every step) and ``predict`` (one frame -> upstream's ``prediction``,
        (1, 3, H, W) float32, not recorded).
    """
    import torch

    from fomm_deploy.training.model.wrappers import kp_to_torch

    def nchw(img: np.ndarray) -> torch.Tensor:  # as demo.py: HWC numpy -> permuted (channels-last strided)
        return torch.tensor(img[np.newaxis].astype(np.float32)).permute(0, 3, 1, 2)

    def kp_numpy(kp: dict[str, torch.Tensor]) -> KP:  # .float(): a no-op in fp32, bf16 -> fp32 under autocast
        return KP(kp["value"].float().numpy(), kp["jacobian"].float().numpy() if "jacobian" in kp else None)

    src = nchw(source)
    kp_source = kp_det(src)
    kp_source_np = kp_numpy(kp_source)
    kp_init = kp_numpy(kp_det(nchw(frames[0])))
    stages: dict[str, list[float]] = {"kp_detector": [], "normalize_kp": [], "generator": []}
    driving = itertools.cycle(frames)

    def animate(frame: np.ndarray, record: bool):
        t0 = time.perf_counter()
        kp_d = kp_det(nchw(frame))
        t1 = time.perf_counter()
        kp_norm = kp_to_torch(normalize_kp(kp_source_np, kp_numpy(kp_d), kp_init, use_relative_movement=True,
                                           use_relative_jacobian=True, adapt_movement_scale=True))
        t2 = time.perf_counter()
        out = gen(src, kp_norm, kp_source)  # upstream computes every output, `deformed` included
        t3 = time.perf_counter()
        if record:
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
                stages[k].append(v)
        return out

    def step() -> None:
        animate(next(driving), True)

    def predict(frame: np.ndarray) -> np.ndarray:
        return animate(frame, False)["prediction"].float().numpy()

    return step, stages, predict


def run_upstream(ckpt: Path, cfg: FommConfig, source: np.ndarray, frames: np.ndarray, *, warmup: int, iters: int,
                 threads: int, predictions: bool = False) -> tuple[Entry, np.ndarray | None]:
    """The baseline, and with ``predictions`` also upstream's prediction for each of ``frames`` (N, 3, H, W),
    computed after the timing, against which the peers' parity is measured."""
    import torch

    from fomm_deploy.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    models = load_checkpoint(ckpt, cfg).models
    _reset_peak_rss()
    with torch.no_grad():
        step, stages, predict = upstream_loop(models.kp_detector, models.generator, source, frames)
        times = timed_calls(step, warmup, iters)
        peak = _peak_rss_mb()
        reference = np.concatenate([predict(f) for f in frames]) if predictions else None
    med, p90, p99, stage_ms = _summary(times, stages, warmup)
    del models, step, predict
    gc.collect()
    return Entry("upstream-eager", "fp32", "baseline", med, p90, p99, 1000 / med, peak, stage_ms), reference


def baseline_upstream_eager(ckpt: Path, cfg: FommConfig, source: np.ndarray, frames: np.ndarray, *, warmup: int,
                            iters: int, threads: int) -> Entry:
    """Upstream's demo loop in eager PyTorch (fp32, batch 1, ``torch.no_grad``): the baseline of every ratio."""
    return run_upstream(ckpt, cfg, source, frames, warmup=warmup, iters=iters, threads=threads)[0]


# -- our backends ------------------------------------------------------------------------------------------


def bench_backend(exported, backend: str, precision: str, variant: str, source: np.ndarray, frames: np.ndarray, *,
                  warmup: int, iters: int, threads: int, device: str | None = None,
                  reference: np.ndarray | None = None) -> Entry:
    """One path, batch 1. ``variant``: ``reference`` (kp_detector + generator), ``split`` (kp_detector +
    generator_frame, the motion on the host, float frames in and out) or ``frame_step`` (the one graph, from the
    uint8 model frame to the uint8 result). With ``reference`` (upstream eager's predictions of ``frames``), the
    entry gets its ``parity`` against them, as the peers do. The torch backend runs without torch.compile."""
    providers = ("cpu",) if backend == "onnxruntime" else None
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    _reset_peak_rss()
    split, step = variant in ("split", "frame_step"), variant == "frame_step"
    # The torch backend runs eager, as the reference it is (it compiles by default on CUDA; --peers and gpu-check
    # time torch.compile).
    animator = open_animator(exported, backend, precision, split=split, frame_step=step, providers=providers,
                             relative=True, adapt_scale=True, device=device if backend == "torch" else None,
                             compile=False)
    entry = time_animator(animator, backend, precision, variant, source, frames, warmup=warmup, iters=iters)
    if reference is not None:
        from .peers import parity

        entry.parity = parity(predict_frames(animator, frames, uint8=step), reference)
    close_animator(animator)
    return entry


def predict_frames(animator, frames: np.ndarray, *, uint8: bool = False) -> np.ndarray:
    """An Animator's prediction of each of ``frames``, one at a time, as (N, 3, H, W) float32 in [0, 1]; with
    ``uint8``, through ``animate_uint8`` (frame_step: uint8 in and out)."""
    if uint8:
        out = np.concatenate([animator.animate_uint8(f[None]) for f in to_uint8(frames)])
        return out.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.concatenate([animator.animate_prepared(f[None], return_float=True) for f in frames])


def time_animator(animator, backend: str, precision: str, variant: str, source: np.ndarray, frames: np.ndarray, *,
                  warmup: int, iters: int) -> Entry:
    """Time an opened Animator's steps (``bench_backend``'s measurement; the caller resets the peak RSS before
    opening it, so loading counts). ``variant``: ``reference``, ``split`` or ``frame_step``, as it was opened."""
    split, step = variant in ("split", "frame_step"), variant == "frame_step"
    t0 = time.perf_counter()
    animator.set_source(source)
    once = {"set_source (keypoints" + (" + encoder)" if split else ")"): (time.perf_counter() - t0) * 1000}
    animator.set_reference(frames[0], prepared=True)
    if step:
        graphs = [animator.frame_step]
        uint8_frames = itertools.cycle(to_uint8(frames))

        def run() -> None:
            animator.animate_uint8(next(uint8_frames)[None])
    else:
        graphs = [animator.kp_detector, animator.generator_frame if split else animator.generator]
        driving = itertools.cycle(frames)

        def run() -> None:
            animator.animate_prepared(next(driving)[None], return_float=True)

    stages: dict[str, list[float]] = {g.spec.name: [] for g in graphs}

    def timed() -> None:
        run()
        for g in graphs:
            stages[g.spec.name].append(g.last_inference_time)

    times = timed_calls(timed, warmup, iters)
    peak = _peak_rss_mb()
    med, p90, p99, stage_ms = _summary(times, stages, warmup)
    stage_ms["glue (normalize_kp, copies)" if not step else "glue (feed, copies)"] = \
        max(0.0, med - sum(stage_ms.values()))
    return Entry(backend, precision, variant, med, p90, p99, 1000 / med, peak, stage_ms, once)


def close_animator(animator) -> None:
    """Deactivate every backend of an Animator and collect it."""
    for b in (animator.kp_detector, animator.generator, animator.source_encoder, animator.generator_frame,
              animator.frame_step):
        if b is not None:
            b.deactivate()
    gc.collect()


def available_backends() -> list[tuple[str, str]]:
    """(backend, precision) pairs this machine can run."""

    pairs = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8")]

    if not tensorrt_missing():
        try:
            from fomm_deploy.runtime.backends.cuda import cuda_api

            cuda_api()
            pairs += [("tensorrt", "fp32"), ("tensorrt", "fp16")]
        except Exception:
            pass
    return pairs


@dataclass
class BenchResult:
    command: str
    config: str
    weights: str
    machine: dict[str, str]
    warmup: int
    iters: int
    threads: int
    export_seconds: float | None
    baseline: Entry
    results: list[Entry]
    seconds: float
    peaks: dict | None = None  # roofline.Peaks.to_json(), with --peak
    peers: list[Entry] = field(default_factory=list)  # with --peers
    skipped: list[Skipped] = field(default_factory=list)  # peers that could not run, with the reason

    def to_json(self) -> dict:
        return {
            "command": self.command, "config": self.config, "weights": self.weights, "machine": self.machine,
            "warmup": self.warmup, "iters": self.iters, "threads": self.threads,
            "export_seconds": self.export_seconds, "baseline_median_ms": self.baseline.median_ms,
            "baseline": asdict(self.baseline), "results": [asdict(r) for r in self.results],
            "seconds": self.seconds, "peaks": self.peaks, "peers": [asdict(p) for p in self.peers],
            "peers_skipped": [asdict(p) for p in self.skipped],
        }


def run_bench(cfg: FommConfig, *, ckpt: Path | None, onnx_dir: Path | None, pairs: list[tuple[str, str]],
              variants: tuple[str, ...] = ("reference", "split"), warmup: int = 2, iters: int = 10,
              threads: int | None = None, command: str = "", log: Callable[[str], None] = print,
              device: str | None = None, peak: bool = False, peers: bool = False) -> BenchResult:
    """Export (unless ``onnx_dir`` is given), then time the baseline and every (backend, precision, variant).

    Every entry gets the convolution work of its graphs; with ``peak``, the machine's peaks are sampled
    (``roofline.measure_peaks``) before the first path and after each, and every entry gets its floor and
    ``x floor`` from the two samples around it.

    With ``peers``, the peers of ``benchmarks/peers.py`` are timed after the project's paths, the same way
    (their floors too); every path's and peer's prediction is then compared with upstream eager's on the same
    frames (``Entry.parity``).
    """
    from fomm_deploy.export.exporter import run_export

    start = time.perf_counter()
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="fomm-bench-") as tmp:
        tmp = Path(tmp)
        weights = str(ckpt) if ckpt else "random (seed 0)"
        if ckpt is None:  # what python -m fomm_deploy.training.random_checkpoint writes
            from fomm_deploy.training.random_checkpoint import write_random_checkpoint

            ckpt = write_random_checkpoint(cfg, tmp / "random.pth.tar", seed=0)
        export_seconds = None
        if onnx_dir is None:
            log(f"exporting {cfg.name} (fp32, fp16 and int8, with the per-source split) ...")
            t0 = time.perf_counter()
            run_export(ckpt, cfg, tmp / "exported", precision="all", budgets=LATENCY_ONLY, emulate_fp16=False)
            export_seconds = time.perf_counter() - t0
            onnx_dir = tmp / "exported"
        exported = load_exported(onnx_dir)
        source, frames = bench_frames(exported.config, 8)
        # With --peak, the peaks are sampled before the first path and after every path; each path's floor
        # uses the two samples around it, so a machine whose speed drifts during the run (a shared VM
        # does) is compared with itself at the time of the path.
        samples: list[Peaks] = []

        def sample_peaks() -> None:
            if peak:
                samples.append(measure_peaks(threads, PEAK_SAMPLE_SECONDS))

        if peak:
            log(f"peaks: fp32 and int8 3x3 convolutions, {threads} threads, sampled before and after every path")
        sample_peaks()
        log(f"baseline: upstream-style eager PyTorch ({warmup} warm-up + {iters} steps) ...")
        baseline, reference = run_upstream(ckpt, exported.config, source, frames, warmup=warmup, iters=iters,
                                           threads=threads, predictions=peers)
        sample_peaks()
        results = []
        for backend, precision in pairs:
            for variant in variants:
                files = "fp32" if backend == "torch" else precision
                if not exported.has_precision(precision) or (variant == "split" and not exported.has_split(files)) \
                        or (variant == "frame_step" and not exported.has_frame_step(files)):
                    continue
                log(f"{backend} {precision} {variant} ...")
                entry = bench_backend(exported, backend, precision, variant, source, frames, warmup=warmup,
                                      iters=iters, threads=threads, device=device, reference=reference)
                entry.vs_baseline = entry.median_ms / baseline.median_ms
                results.append(entry)
                sample_peaks()
        peer_entries: list[Entry] = []
        skipped: list[Skipped] = []
        if peers:
            from .peers import run_peers

            for got in run_peers(ckpt, exported, source, frames, reference, warmup=warmup, iters=iters,
                                 threads=threads, log=log):
                if isinstance(got, Skipped):
                    log(f"  skipped: {got.reason}")
                    skipped.append(got)
                    continue
                got.vs_baseline = got.median_ms / baseline.median_ms
                peer_entries.append(got)
                sample_peaks()
        peaks = Peaks.mean(*samples) if samples else None
        local = [Peaks.mean(a, b) for a, b in zip(samples, samples[1:])] if samples else None
        add_work([baseline] + results + peer_entries, exported, local)
    return BenchResult(command, cfg.name, weights, machine_info(), warmup, iters, threads, export_seconds, baseline,
                       results, time.perf_counter() - start, peaks.to_json() if peaks else None, peer_entries,
                       skipped)


def add_work(entries: list[Entry], exported, peaks: list[Peaks] | None) -> None:
    """Set each entry's convolution work (from the graph files it ran: the fp32 ones for the torch backend,
    the baseline and torch.compile; ``Entry.files`` where set) and, given ``peaks`` (one per entry), its floor
    and ``x floor``. A bf16 path gets no floor: the peaks are measured for fp32 and int8 only."""
    counted: dict[str, Work] = {}

    def work(graph: str, precision: str) -> Work:
        name = graph_file_name(graph, precision)
        if name not in counted:
            counted[name] = graph_work(exported.dir / name)
        return counted[name]

    for i, e in enumerate(entries):
        precision = e.files or (e.precision if e.backend in ("onnxruntime", "tensorrt") else "fp32")
        graphs = {"split": ("kp_detector", "generator_frame"), "frame_step": ("frame_step",)}.get(
            e.variant, ("kp_detector", "generator"))
        total = sum((work(g, precision) for g in graphs[1:]), work(graphs[0], precision))
        e.int8_gop, e.float_gflop = total.int8_gop, total.float_gflop
        if peaks is not None and "bf16" not in e.precision:
            e.floor_ms = peaks[i].floor_ms(total)
            e.x_floor = e.median_ms / e.floor_ms
            e.peaks = peaks[i].to_json()


def cpu_line(machine: dict[str, str]) -> str:
    """``machine_info()`` as the reports' one line: CPU, cores, family/model and instruction sets."""
    return (f"{machine.get('cpu', '?')} ({machine.get('cores')} cores, family/model "
            f"{machine.get('cpu_family_model', '?')}, {machine.get('isa', '?')})")


# -- reports -----------------------------------------------------------------------------------------------


def markdown_table(result: BenchResult) -> str:
    peaks = result.peaks
    lines = [
        f"Config `{result.config}`, weights: {result.weights}; {result.iters} steps after {result.warmup} warm-up; "
        f"{result.threads} threads; CPU: {cpu_line(result.machine)}; GPU: {result.machine.get('gpu')}.",
        "",
    ]
    if peaks:
        spread = ", ".join(f"{kind} {min(peaks.get(key) or [0]):.0f}-{max(peaks.get(key) or [0]):.0f}"
                           for kind, key in (("fp32", "fp32_samples"), ("int8", "int8_samples")))
        lines += [f"Measured peaks (ONNX Runtime, chained 3x3 256->256 convs at 64x64, {peaks['threads']} threads, "
                  f"sampled before the first path and after each): mean fp32 {peaks['fp32_gflops']:.0f} GFLOP/s, int8 "
                  f"{peaks['int8_gops']:.0f} GOP/s; range {spread}. Each path's floor uses the two samples around it "
                  "(column *peaks*): floor = int8 GOP / int8 peak + float GFLOP / fp32 peak (benchmarks/roofline.py).",
                  ""]
    with_peers = bool(result.peers or result.skipped)
    if with_peers:
        lines += ["Rows marked *(peer)* are what a CPU user could run instead (fomm-bench --peers): torch.compile of "
                  "upstream's modules, and OpenVINO on this export's graphs. Their compile time is not in the step "
                  "times. *vs eager* is each row's prediction against upstream eager's on the same frames (max abs "
                  "difference, PSNR). bf16 rows have no floor: the peaks are measured for fp32 and int8 only.", ""]
    floor_cols = " floor ms | x floor | peaks (fp32 / int8) |" if peaks else ""
    lines += [
        "| backend | precision | graphs | median ms | p90 ms | p99 ms | fps | vs upstream eager | conv work (int8 GOP + "
        f"float GFLOP) |{floor_cols} peak RSS MB |"
        + (" vs eager (max abs, PSNR) |" if with_peers else "") + " stages (median ms) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: | ---: |" if peaks else "")
        + " ---: |" + (" --- |" if with_peers else "") + " --- |",
    ]
    for e in [result.baseline] + result.results + result.peers:
        ratio = 1.0 if e is result.baseline else e.vs_baseline
        stages = ", ".join(f"{k} {v:.1f}" for k, v in e.stages_ms.items())
        if e.compile_s is not None:
            stages += f"; compile {e.compile_s:.1f} s (not in the steps)"
        if e.detail:
            stages += "; " + ", ".join(f"{k} {_detail_text(v)}" for k, v in e.detail.items())
        floor = (f" {e.floor_ms:.1f} | {e.x_floor:.2f}x | {e.peaks['fp32_gflops']:.0f} / {e.peaks['int8_gops']:.0f} |"
                 if peaks and e.floor_ms and e.peaks else (" | | |" if peaks else ""))
        name = f"{e.backend} (peer)" if any(e is p for p in result.peers) else e.backend
        parity = ""
        if with_peers:
            parity = f" {_parity_text(e.parity)} |" if e.parity else " |"
        lines.append(f"| {name} | {e.precision} | {e.variant} | {e.median_ms:.1f} | {e.p90_ms:.1f} | "
                     f"{e.p99_ms:.1f} | {e.fps:.2f} | {ratio:.2f}x | {e.int8_gop:.1f} + {e.float_gflop:.1f} |{floor} "
                     f"{e.peak_mb:.0f} |{parity} {stages} |")
    empty = " |" * (5 + (3 if peaks else 0) + 2)  # p90 .. conv work, the floor columns, peak RSS, vs eager
    for s in result.skipped:
        lines.append(f"| {s.backend} (peer) | {s.precision} | {s.variant} | skipped |{empty} {s.reason} |")
    return "\n".join(lines) + "\n"


def _detail_text(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _parity_text(parity: dict) -> str:
    psnr = parity.get("psnr_db")
    return f"{parity['max_abs_diff']:.2g}, " + (f"{psnr:.1f} dB" if psnr is not None else "identical")


def draw_chart(result: BenchResult, path: Path) -> Path:
    """Horizontal bars, one per backend/precision/graphs, stacked by stage (OpenCV, no plotting library)."""
    rows = [result.baseline] + result.results + result.peers
    palette = [(66, 133, 244), (52, 168, 83), (251, 188, 5), (234, 67, 53), (154, 160, 166), (171, 71, 188)]
    stage_names: list[str] = []
    for e in rows:
        for k in e.stages_ms:
            if k not in stage_names:
                stage_names.append(k)
    colour = {k: palette[i % len(palette)] for i, k in enumerate(stage_names)}
    left, right, top, bar_h, gap = 330, 250, 60, 26, 12
    width = 1100
    height = top + len(rows) * (bar_h + gap) + 40 + 22 * ((len(stage_names) + 2) // 3)
    img = np.full((height, width, 3), 255, np.uint8)
    scale = (width - left - right) / max(e.median_ms for e in rows)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = f"one animation step, {result.config} ({result.weights}); median ms per step"
    if result.peaks:
        title += "; tick: floor at the measured peaks"
    cv2.putText(img, title, (10, 28), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, e in enumerate(rows):
        y = top + i * (bar_h + gap)
        label = f"{e.backend} {e.precision} {e.variant}" + (" (peer)" if any(e is p for p in result.peers) else "")
        cv2.putText(img, label, (10, y + 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        x = left
        for k, v in e.stages_ms.items():
            w = max(1, int(round(v * scale)))
            bgr = colour[k][::-1]
            cv2.rectangle(img, (x, y), (x + w, y + bar_h), bgr, -1)
            x += w
        ratio = 1.0 if e is result.baseline else e.vs_baseline
        label = f"{e.median_ms:.0f} ms ({ratio:.2f}x)"
        if e.floor_ms:  # the path's floor (--peak): a black tick across its bar
            fx = left + int(round(e.floor_ms * scale))
            cv2.line(img, (fx, y - 3), (fx, y + bar_h + 3), (0, 0, 0), 2)
            label += f" {e.x_floor:.2f}x floor"
        cv2.putText(img, label, (x + 6, y + 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    y = top + len(rows) * (bar_h + gap) + 10
    for i, k in enumerate(stage_names):
        cx, cy = 10 + (i % 3) * 360, y + (i // 3) * 22
        cv2.rectangle(img, (cx, cy), (cx + 14, cy + 14), colour[k][::-1], -1)
        cv2.putText(img, k, (cx + 20, cy + 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return write_image(path, img)


def write_json(result: BenchResult, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return Path(path)
