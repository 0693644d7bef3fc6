"""Checkpoint -> verified ONNX graphs + manifest. The library behind ``fomm-export``.

Everything is written into a staging folder beside the output folder, checked against the graph
contract, run in ONNX Runtime against the PyTorch model on fresh inputs, and only then renamed into
place (``publish.py``): an interrupted or failed export leaves nothing that looks valid.

The orchestration, per graph: trace fp32 (``tracing.py``) and verify it against PyTorch
(``contract.TOLERANCES``); then every reduced-precision variant of :data:`VARIANTS` (how to build it, which
inputs judge it) is built and measured against the fp32 graph (``contract.BUDGETS``). Finally the deployed
split at each reduced precision (``source_encoder.fp16`` feeding ``generator_frame.fp16``; at int8 the fp32
encoder feeding ``generator_frame.int8``) is measured end to end against the fp32 reference generator and
gated by the same budget. Comparisons are ``runtime/core/compare.py``'s; file names are
``runtime/core/manifest.py``'s; inputs are ``inputs.py``'s.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from fomm_deploy.runtime.backends.cuda import device_count, tensorrt_missing
from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.backends.tensorrt import TrtBackend
from fomm_deploy.runtime.core.compare import Comparison, compare
from fomm_deploy.runtime.core.config import FommConfig
from fomm_deploy.runtime.core.contract import OPSET, GraphSpec, graph_specs
from fomm_deploy.runtime.core.errors import ExportError
from fomm_deploy.runtime.core.feeds import kp_from_outputs, split_step_feed, step_image
from fomm_deploy.runtime.core.fileio import sha256_file
from fomm_deploy.runtime.core.pixels import to_uint8_hwc
from fomm_deploy.runtime.core.manifest import (CheckpointInfo, GraphEntry, Manifest, graph_file_name, graph_key,
                                               stored_precision)
from fomm_deploy.runtime.core.precision import BUDGETS, EXPORT_PRECISIONS, Budget, tolerance
from fomm_deploy.training.checkpoint import load_checkpoint
from fomm_deploy.training.model.wrappers import flat_module

from .checks import check_graph, stamp_io_shapes
from .fp16 import mixed_fp16_for_graph
from .fp16_emulation import MODES as EMULATION_MODES, emulate
from .inputs import calibration_frames, real_feeds, sample_feeds
from .publish import prepare_out_dir, publish
from .tracing import export_form, export_graph, torch_outputs

TRACE_SEED, CHECK_SEED = 0, 1
TRACE_BATCH, CHECK_BATCH = 2, 3
# What a failing reduced-precision budget tells the user to do.
BUDGET_HINTS = {
    "fp16": "export with --precision fp32, or report the model: fp16 stays within budget on the models measured",
    "int8": "int8 quality depends on the weights and the calibration frames: calibrate on your own footage "
            "(--calibration VIDEO), or export without int8 (--precision fp16 or fp32); a random-weight or "
            "barely trained model is no int8 quality reference",
}


@dataclass
class GraphReport:
    name: str  # the manifest key, e.g. "generator" or "generator.fp16"
    file: str
    precision: str
    size_bytes: int
    comparison: Comparison  # fp32: against PyTorch; fp16 / int8: against the fp32 graph
    against: str
    emulated: dict[str, Comparison] = field(default_factory=dict)  # fp16: "best" / "worst" emulated arithmetic

    @property
    def summary(self) -> str:
        return self.comparison.summary()


@dataclass
class ExportResult:
    out_dir: Path
    manifest: Manifest
    graphs: list[GraphReport] = field(default_factory=list)
    pipelines: dict[str, Comparison] = field(default_factory=dict)
    emulated_pipelines: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    frame_steps: dict[str, Comparison] = field(default_factory=dict)  # per precision: frame_step vs the split
    seconds: float = 0.0


class _Runner:
    """ONNX Runtime sessions of the staged graphs, opened once each; runs a list of feeds, concatenated."""

    def __init__(self) -> None:
        self._sessions: dict[Path, Any] = {}

    def __call__(self, path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if path not in self._sessions:
            self._sessions[path] = session_from_onnx(path)
        session = self._sessions[path]
        names = [o.name for o in session.get_outputs()]
        runs = [session.run(names, f) for f in feeds]
        return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


@dataclass
class _Job:
    """One export in progress: per graph its contract, its PyTorch reference and its feeds; the budgets; the
    staged graphs' runner; and what it has recorded (per graph, a report and the manifest's entry)."""

    cfg: FommConfig
    staging: Path
    specs: dict[str, GraphSpec]
    modules: dict[str, torch.nn.Module]  # the reference each graph is checked against
    trace_feeds: dict[str, dict[str, np.ndarray]]
    check_feeds: dict[str, dict[str, np.ndarray]]
    budget: dict[str, Budget]  # per reduced precision exported
    step: Callable[[str], None]  # progress
    # int8 only: "calibration" / "evaluation" -> per-graph feeds of real frames
    real: dict[str, dict[str, list[dict[str, np.ndarray]]]] = field(default_factory=dict)
    run: _Runner = field(default_factory=_Runner)
    reports: list[GraphReport] = field(default_factory=list)
    entries: dict[str, GraphEntry] = field(default_factory=dict)

    def record(self, name: str, precision: str, path: Path, comparison: Comparison, against: str) -> GraphReport:
        key = graph_key(name, precision)
        report = GraphReport(key, path.name, precision, path.stat().st_size, comparison, against)
        self.reports.append(report)
        self.entries[key] = GraphEntry(path.name, precision, sha256_file(path), self.specs[name])
        return report


# --------------------------------------------------------------------------------------------
# Reduced-precision variants: how each is built from the fp32 graph, and on which inputs it is judged
# --------------------------------------------------------------------------------------------


def _build_fp16(job: _Job, name: str, model: onnx.ModelProto, fp32_path: Path, out: Path) -> onnx.ModelProto:
    return mixed_fp16_for_graph(name, model)


def _build_int8(job: _Job, name: str, model: onnx.ModelProto, fp32_path: Path, out: Path) -> onnx.ModelProto:
    from .quantize import quantize_int8

    return onnx.load(str(quantize_int8(fp32_path, out, job.real["calibration"][name], graph=name)))


@dataclass(frozen=True)
class Variant:
    precision: str
    build: Callable[[_Job, str, onnx.ModelProto, Path, Path], onnx.ModelProto]
    judged_on: Callable[[_Job, str], list[dict[str, np.ndarray]]]  # (job, graph) -> feeds
    inputs: str  # what judged_on is, for the reports
    verb: str  # progress wording


VARIANTS: dict[str, Variant] = {
    "fp16": Variant("fp16", _build_fp16, lambda job, g: [job.check_feeds[g]], "synthetic frames", "converting"),
    "int8": Variant("int8", _build_int8, lambda job, g: job.real["evaluation"][g], "held-out real frames",
                    "quantising (calibrated on real frames)"),
}


# --------------------------------------------------------------------------------------------
# Staging and verification of one graph
# --------------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, spec: GraphSpec, cfg: FommConfig, path: Path) -> Path:
    stamp_io_shapes(model, spec)
    check_graph(model, spec, align_corners=cfg.align_corners)
    onnx.save(model, str(path))
    return path


def measure_split(job: _Job, variant: Variant) -> Comparison:
    """``source_encoder`` at ``variant.precision`` feeding ``generator_frame`` at that precision (as the
    Animator runs them), against the fp32 ``generator.onnx``, on the inputs that judge the variant.

    Both are fed the PyTorch keypoints: the keypoint detector's own error is judged in pixels on its own.
    """
    encoder = job.staging / graph_file_name("source_encoder", variant.precision)
    frame = job.staging / graph_file_name("generator_frame", variant.precision)
    feeds = variant.judged_on(job, "generator")
    kp_names = [n for n in feeds[0] if n.startswith("kp_")]
    chained = [dict(job.run(encoder, [{"source": f["source"]}]), **{n: f[n] for n in kp_names}) for f in feeds]
    ref = job.run(job.staging / graph_file_name("generator", "fp32"), feeds)
    return compare(f"{encoder.name} -> {frame.name} vs generator.onnx", job.run(frame, chained), ref,
                   precision=variant.precision, frame_size=job.cfg.frame_size)


def measure_emulated(job: _Job, name: str, path: Path, fp32_path: Path, feeds: list[dict[str, np.ndarray]],
                     budget: Budget) -> dict[str, Comparison]:
    """The fp16 graph at ``path`` with fp16 arithmetic emulated (``fp16_emulation``: best and worst case)
    against the fp32 graph, each judged by ``budget``. ONNX Runtime's CPU numbers only see rounding of
    weights and region boundaries; these are what a GPU computing in fp16 can give."""
    ref = job.run(fp32_path, feeds)
    model = onnx.load(str(path))
    out = {}
    for mode in EMULATION_MODES:
        c = compare(f"{path.name} ({mode}-case fp16 arithmetic) vs {fp32_path.name}", emulate(model, feeds, mode), ref,
                    precision="fp16", frame_size=job.cfg.frame_size)
        c.budget_failures(budget)
        out[mode] = c
    return out


def measure_split_emulated(job: _Job, budget: Budget) -> dict[str, Comparison]:
    """:func:`measure_split` at fp16 with both graphs' fp16 arithmetic emulated (best and worst case)."""
    encoder = onnx.load(str(job.staging / graph_file_name("source_encoder", "fp16")))
    frame = onnx.load(str(job.staging / graph_file_name("generator_frame", "fp16")))
    feeds = [job.check_feeds["generator"]]
    kp_names = [n for n in feeds[0] if n.startswith("kp_")]
    ref = job.run(job.staging / graph_file_name("generator", "fp32"), feeds)
    out = {}
    for mode in EMULATION_MODES:
        chained = [dict(emulate(encoder, [{"source": f["source"]}], mode), **{n: f[n] for n in kp_names})
                   for f in feeds]
        c = compare(f"source_encoder.fp16 -> generator_frame.fp16 ({mode}-case fp16 arithmetic) vs generator.onnx",
                    emulate(frame, chained, mode), ref, precision="fp16", frame_size=job.cfg.frame_size)
        c.budget_failures(budget)
        out[mode] = c
    return out


def measure_frame_step(job: _Job, precision: str, feeds: list[dict[str, np.ndarray]]) -> Comparison:
    """``frame_step`` at ``precision`` against the graphs it joins, run apart at the same precision:
    ``kp_detector`` on the driving frames, the host's normalisation (``feeds.split_step_feed``) and
    ``generator_frame``, converted to uint8 as the host does. Judged by the contract's tolerance for ``frame``."""
    step = job.staging / graph_file_name("frame_step", precision)
    kp_path = job.staging / graph_file_name("kp_detector", precision)
    frame_path = job.staging / graph_file_name("generator_frame", precision)
    frames = []
    for f in feeds:
        kp = kp_from_outputs(job.run(kp_path, [{"image": step_image(f)}]))
        frames.append(to_uint8_hwc(job.run(frame_path, [split_step_feed(f, kp)])["prediction"]))
    return compare(f"{step.name} vs {kp_path.name} -> host normalisation -> {frame_path.name}",
                   job.run(step, feeds), {"frame": np.concatenate(frames)}, precision=precision,
                   frame_size=job.cfg.frame_size)


# --------------------------------------------------------------------------------------------
# TensorRT engines
# --------------------------------------------------------------------------------------------


def check_engine_prerequisites() -> None:
    """``--engine`` needs the tensorrt package and a CUDA GPU; say exactly what is missing."""
    missing = tensorrt_missing()
    # Asked of the CUDA layer the engines will run on (cuda-python / pycuda), never of torch: a CPU build of
    # torch says no GPU where TensorRT has one, and a CUDA build would open a second context.
    if not missing and device_count() < 1:
        missing.append("a CUDA GPU visible to this process")
    if missing:
        raise ExportError("--engine needs " + " and ".join(missing) + "; export without --engine and build "
                          "engines on the deployment machine (fomm-animate --backend tensorrt builds them on "
                          "first use)")


def build_engines(out_dir: Path, cfg: FommConfig, precisions: tuple[str, ...], log: Callable[[str], None]) -> list[Path]:
    """Build (or find cached) TensorRT engines for the published graphs, in ``out_dir/engines/``."""
    paths = []
    for precision in precisions:
        for name, spec in graph_specs(cfg).items():
            paths.append(TrtBackend.from_onnx(spec, out_dir, precision, log=log).engine_path)
    return paths


# --------------------------------------------------------------------------------------------
# The whole export
# --------------------------------------------------------------------------------------------


def run_export(ckpt: Path, cfg: FommConfig, out_dir: Path, *, precision: str = "fp32", engine: bool = False,
               force: bool = False, progress: Callable[[str], None] | None = None,
               tolerances: Callable[[str, str], float] = tolerance,
               budgets: Mapping[str, Budget] | None = None, calibration: Path | None = None,
               emulate_fp16: bool = True) -> ExportResult:
    """Export ``ckpt`` (trained with ``cfg``) to ``out_dir`` and verify it.

    Args:
        precision: ``fp32`` (fp32 graphs); ``fp16`` / ``int8`` add ``*.fp16.onnx`` / ``*.int8.onnx``; ``all`` both.
        calibration: a video whose frames calibrate and judge the int8 graphs (default: the bundled portrait
            under synthetic head motion).
        progress: called with a short description before each step.
        tolerances: (precision, output) -> max abs error allowed against PyTorch (default: the contract's table).
        budgets: per reduced precision, a budget replacing the contract's (``contract.BUDGETS``).
        emulate_fp16: also measure every fp16 graph, and the fp16 split, with fp16 arithmetic emulated
            (``fp16_emulation``, best and worst case); the worst case is gated by the fp16 budget. Off: only
            ONNX Runtime's CPU numbers (which run the fp16 regions in fp32) are recorded.
    Raises:
        ExportError, InputError, CheckpointError, ContractError, ParityError: with nothing written to ``out_dir``.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'; choose from {', '.join(EXPORT_PRECISIONS)}")
    if engine:
        check_engine_prerequisites()
    chosen = [VARIANTS[p] for p in EXPORT_PRECISIONS[precision] if p in VARIANTS]
    budget = {v.precision: dict(BUDGETS, **(budgets or {}))[v.precision] for v in chosen}
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out_dir, ckpt = Path(out_dir), Path(ckpt)
    step("loading checkpoint")
    loaded = load_checkpoint(ckpt, cfg)
    staging = prepare_out_dir(out_dir, force)
    try:
        job = _start_job(loaded.models, cfg, staging, budget, step, calibration)
        for name in job.specs:
            model, path = _export_fp32(job, name, tolerances)
            for variant in chosen:
                if stored_precision(name, variant.precision) == variant.precision:  # else it stays fp32 there
                    _export_variant(job, name, variant, model, path, emulate_fp16)
        pipelines, emulated_pipelines = _measure_splits(job, chosen, emulate_fp16)
        frame_steps = _measure_frame_steps(job, chosen)
        manifest = _manifest(job, ckpt, loaded.epoch, pipelines, emulated_pipelines, frame_steps, calibration)
        step("publishing")
        manifest.write(staging)
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if engine:  # after publishing: engines are cached artefacts of the graphs, each written atomically
        step("building TensorRT engines")
        trt_precisions = tuple(p for p in EXPORT_PRECISIONS[precision] if p in ("fp32", "fp16"))
        build_engines(out_dir, cfg, trt_precisions, log=lambda m: step(m))
    return ExportResult(out_dir, manifest, job.reports, pipelines, emulated_pipelines, frame_steps,
                        time.perf_counter() - t0)


def _start_job(models, cfg: FommConfig, staging: Path, budget: dict[str, Budget], step: Callable[[str], None],
               calibration: Path | None) -> _Job:
    """The export's inputs: per graph its contract, its PyTorch reference, the feeds that trace and check it,
    and, for int8, the real frames that calibrate and judge it."""
    specs = graph_specs(cfg)
    modules = {name: flat_module(name, models, cfg.estimate_jacobian) for name in specs}  # the reference
    trace_feeds = sample_feeds(models, cfg, TRACE_BATCH, TRACE_SEED)
    job = _Job(cfg, staging, specs, modules, trace_feeds, sample_feeds(models, cfg, CHECK_BATCH, CHECK_SEED),
               budget=budget, step=step)
    if "int8" in budget:
        calib_frames, eval_frames = calibration_frames(cfg, calibration)
        job.real = {"calibration": real_feeds(models, cfg, calib_frames),
                    "evaluation": real_feeds(models, cfg, eval_frames)}
    return job


def _export_fp32(job: _Job, name: str, tolerances: Callable[[str, str], float]) -> tuple[onnx.ModelProto, Path]:
    """Graph ``name`` traced in fp32, staged, and within ``tolerances`` of PyTorch in ONNX Runtime."""
    spec = job.specs[name]
    job.step(f"exporting {name}.onnx")
    path = job.staging / graph_file_name(name, "fp32")
    model = export_graph(export_form(job.modules[name]), spec, job.trace_feeds[name], path)
    _save(model, spec, job.cfg, path)
    job.step(f"verifying {path.name} in ONNX Runtime")
    ref = torch_outputs(job.modules[name], spec, job.check_feeds[name])
    fp32 = compare(f"{path.name} vs PyTorch", job.run(path, [job.check_feeds[name]]), ref,
                   frame_size=job.cfg.frame_size)
    fp32.raise_for(fp32.tolerance_failures(tolerances))
    job.record(name, "fp32", path, fp32, "PyTorch")
    return model, path


def _export_variant(job: _Job, name: str, variant: Variant, model: onnx.ModelProto, fp32_path: Path,
                    emulate_fp16: bool) -> None:
    """Graph ``name`` at ``variant.precision``, built from its fp32 graph, staged, and within the budget against
    it (at fp16 also with fp16 arithmetic emulated, when ``emulate_fp16``)."""
    job.step(f"{variant.verb} {name} to {variant.precision}")
    out = job.staging / graph_file_name(name, variant.precision)
    _save(variant.build(job, name, model, fp32_path, out), job.specs[name], job.cfg, out)
    job.step(f"measuring {out.name} against fp32 on {variant.inputs}")
    feeds = variant.judged_on(job, name)
    result = compare(f"{out.name} vs {fp32_path.name}", job.run(out, feeds), job.run(fp32_path, feeds),
                     precision=variant.precision, frame_size=job.cfg.frame_size)
    result.raise_for(result.budget_failures(job.budget[variant.precision]), BUDGET_HINTS[variant.precision])
    report = job.record(name, variant.precision, out, result, f"fp32 ({variant.inputs})")
    if variant.precision == "fp16" and emulate_fp16:
        job.step(f"emulating fp16 arithmetic of {out.name} (best and worst case)")
        report.emulated = measure_emulated(job, name, out, fp32_path, feeds, job.budget["fp16"])
        report.emulated["worst"].raise_for(hint=BUDGET_HINTS["fp16"])


def _measure_splits(job: _Job, chosen: list[Variant],
                    emulate_fp16: bool) -> tuple[dict[str, Comparison], dict[str, dict[str, Comparison]]]:
    """The deployed split (``source_encoder`` feeding ``generator_frame``) at each chosen precision, end to end
    and within its budget; at fp16 also with fp16 arithmetic emulated. Nothing for a config without the split."""
    pipelines: dict[str, Comparison] = {}
    emulated_pipelines: dict[str, dict[str, Comparison]] = {}
    if "source_encoder" not in job.specs:
        return pipelines, emulated_pipelines
    for variant in chosen:
        job.step(f"measuring source_encoder -> generator_frame at {variant.precision} end to end")
        result = measure_split(job, variant)
        result.raise_for(result.budget_failures(job.budget[variant.precision]), BUDGET_HINTS[variant.precision])
        pipelines[f"split.{variant.precision}"] = result
    if emulate_fp16 and "fp16" in job.budget:
        job.step("emulating fp16 arithmetic of source_encoder -> generator_frame (best and worst case)")
        emulated_pipelines["split.fp16"] = measure_split_emulated(job, job.budget["fp16"])
        emulated_pipelines["split.fp16"]["worst"].raise_for(hint=BUDGET_HINTS["fp16"])
    return pipelines, emulated_pipelines


def _measure_frame_steps(job: _Job, chosen: list[Variant]) -> dict[str, Comparison]:
    """``frame_step`` against the split graphs at fp32 and each chosen precision (:func:`measure_frame_step`),
    on the feeds that judge that precision, within the contract's tolerance. Nothing without the split."""
    if "frame_step" not in job.specs:
        return {}
    out = {}
    for precision, feeds in [("fp32", [job.check_feeds["frame_step"]])] + [
            (v.precision, v.judged_on(job, "frame_step")) for v in chosen]:
        job.step(f"measuring frame_step against the split graphs at {precision}")
        result = measure_frame_step(job, precision, feeds)
        result.raise_for(result.tolerance_failures(tolerance),
                         "frame_step and the split graphs it joins disagree: report it, and deploy the split "
                         "(fomm-animate --no-frame-step)")
        out[precision] = result
    return out


def _manifest(job: _Job, ckpt: Path, epoch: int | None, pipelines: dict[str, Comparison],
              emulated_pipelines: dict[str, dict[str, Comparison]], frame_steps: dict[str, Comparison],
              calibration: Path | None) -> Manifest:
    cfg = job.cfg
    return Manifest(
        checkpoint=CheckpointInfo(str(ckpt.resolve()), sha256_file(ckpt), epoch),
        config_name=cfg.name, config=cfg.to_dict(), opset=OPSET, align_corners=cfg.align_corners,
        frame_size=tuple(cfg.frame_size), num_kp=cfg.num_kp, estimate_jacobian=cfg.estimate_jacobian,
        graphs=job.entries, parity=_parity_record(job, pipelines, emulated_pipelines, frame_steps, calibration))


def _parity_record(job: _Job, pipelines: dict[str, Comparison], emulated_pipelines: dict[str, dict[str, Comparison]],
                   frame_steps: dict[str, Comparison], calibration: Path | None) -> dict[str, Any]:
    """The manifest's ``parity`` section: what was compared with what, on which inputs, and the numbers."""
    real = job.real.get("evaluation")
    reports = job.reports
    return {
        "reference": "PyTorch model, fp32, CPU",
        "inputs": f"smooth synthetic frames, seed {CHECK_SEED}, batch {CHECK_BATCH} (tracing used seed "
                  f"{TRACE_SEED}, batch {TRACE_BATCH})",
        "budgets": {p: b.to_dict() for p, b in job.budget.items()},
        "int8_inputs": (f"real frames: {calibration or 'the bundled portrait under synthetic head motion'}; "
                        f"{len(job.real['calibration']['kp_detector'])} calibration frames, judged on "
                        f"{len(real['kp_detector'])} other frames" if real else None),
        "results": {r.name: dict(r.comparison.to_dict(), against=r.against,
                                 **({"emulated": {m: c.to_dict() for m, c in r.emulated.items()}} if r.emulated else {}))
                    for r in reports},
        "pipelines": {k: dict(c.to_dict(), against="generator.onnx (fp32), both fed the PyTorch keypoints",
                              **({"emulated": {m: e.to_dict() for m, e in emulated_pipelines[k].items()}}
                                 if emulated_pipelines and k in emulated_pipelines else {}))
                      for k, c in pipelines.items()},
        "frame_step": {p: dict(c.to_dict(), against=f"kp_detector -> host normalisation -> generator_frame, "
                                                    f"{p} graphs")
                       for p, c in frame_steps.items()},
        "fp16_emulation": ("ONNX Runtime CPU runs fp16 regions in fp32; 'emulated' holds the fp16 graphs run node by "
                           "node with fp16 rounding (export/fp16_emulation.py): best = fp32 accumulation inside "
                           "each op, worst = sequential fp16 multiply-add in Conv/MatMul/AveragePool; the worst "
                           "case is gated by the fp16 budget") if emulated_pipelines or any(r.emulated for r in reports)
                          else None,
    }
