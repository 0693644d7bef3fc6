"""Checkpoint -> verified ONNX graphs + manifest. The library behind ``fomm-export``.

Everything is written into a staging folder beside the output folder, checked against the graph
contract, run in ONNX Runtime against the PyTorch model on fresh inputs, and only then renamed into
place: an interrupted or failed export leaves nothing that looks valid.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.config import FommConfig
from fomm_deploy.runtime.contract import FP16_BUDGET, OPSET, GraphSpec, graph_specs, tolerance
from fomm_deploy.runtime.errors import ExportError, ParityError
from fomm_deploy.runtime.fileio import make_staging_dir
from fomm_deploy.runtime.graphs import FP32_AT_INT8
from fomm_deploy.training.checkpoint import load_checkpoint, sha256_file

from .checks import check_graph, stamp_io_shapes
from .fp16 import convert_to_mixed_fp16
from .subpixel import with_subpixel_upsampling
from fomm_deploy.training.model.wrappers import flat_module

PRECISIONS = {"fp32": ("fp32",), "fp16": ("fp32", "fp16"), "int8": ("fp32", "int8"), "all": ("fp32", "fp16", "int8")}
CALIBRATION_FRAMES, EVALUATION_FRAMES = 24, 8
MANIFEST_FORMAT = "fomm-deploy-manifest/1"
TRACE_SEED, CHECK_SEED = 0, 1
TRACE_BATCH, CHECK_BATCH = 2, 3


@dataclass
class GraphReport:
    name: str  # e.g. "generator" or "generator.fp16"
    file: str
    precision: str
    size_bytes: int
    parity: dict[str, dict[str, float]]  # output -> {max_abs, mean_abs, atol} or fp16 metrics
    summary: str


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    graphs: list[GraphReport] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def smooth_images(batch: int, channels: int, h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic, image-like test frames: low-frequency colour waves plus soft blobs, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / h, xx / w
    out = np.empty((batch, channels, h, w), np.float32)
    for b in range(batch):
        for c in range(channels):
            img = np.full((h, w), 0.5)
            for _ in range(3):
                fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
                img += rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            for _ in range(4):
                cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
                img += rng.uniform(-0.3, 0.3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            out[b, c] = np.clip(img, 0, 1)
    return np.round(out * 255) / 255  # on the 8-bit grid, like decoded video frames


def _source_parts(models, source: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """What the per-source split computes once per source (None without a dense-motion network)."""
    if models.generator.dense_motion_network is None:
        return None
    with torch.no_grad():
        src = torch.from_numpy(source)
        return models.generator.encode_source(src).numpy(), models.generator.dense_motion_network.downsample(src).numpy()


def _feeds(models, cfg: FommConfig, source: np.ndarray, kp_source: dict, parts, driving: np.ndarray
           ) -> dict[str, dict[str, np.ndarray]]:
    """One feed per graph for ``driving`` animating ``source`` (keypoints and split parts precomputed)."""
    with torch.no_grad():
        kp_driving = models.kp_detector(torch.from_numpy(driving))
    kp = {"kp_source_value": kp_source["value"].numpy(), "kp_driving_value": kp_driving["value"].numpy()}
    if cfg.estimate_jacobian:
        kp["kp_source_jacobian"] = kp_source["jacobian"].numpy()
        kp["kp_driving_jacobian"] = kp_driving["jacobian"].numpy()
    feeds = {"kp_detector": {"image": driving}, "generator": {"source": source, **kp}}
    if parts is not None:
        feeds["source_encoder"] = {"source": driving}  # any frame can be a source; these vary the most
        feeds["generator_frame"] = {"source_features": parts[0], "source_down": parts[1], **kp}
    return feeds


def sample_feeds(models, cfg: FommConfig, batch: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Inputs for every graph: smooth frames, and the keypoints the PyTorch detector finds on them."""
    h, w = cfg.frame_size
    source = smooth_images(batch, cfg.num_channels, h, w, seed)
    driving = smooth_images(batch, cfg.num_channels, h, w, seed + 1000)
    with torch.no_grad():
        kp_source = models.kp_detector(torch.from_numpy(source))
    return _feeds(models, cfg, source, kp_source, _source_parts(models, source), driving)


def real_feeds(models, cfg: FommConfig, frames: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph, one batch-1 feed per frame of a real clip (frames (N, H, W, 3) float32 at the model size):
    frame 0 is the source, every frame drives it. Used to calibrate and to judge int8 graphs."""
    clip = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    source = clip[:1]
    with torch.no_grad():
        kp_source = models.kp_detector(torch.from_numpy(source))
    parts = _source_parts(models, source)
    out: dict[str, list] = {name: [] for name in graph_specs(cfg)}
    for i in range(len(clip)):
        for name, feed in _feeds(models, cfg, source, kp_source, parts, clip[i:i + 1]).items():
            out[name].append(feed)
    return out


def calibration_frames(cfg: FommConfig, video: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Real frames at the model size for int8: (calibration frames, disjoint evaluation frames).

    From ``video`` if given (a seeded draw of its frames, split in two), else the bundled portrait under
    two different synthetic head motions."""
    from fomm_deploy.runtime.preprocess import prepare_frame
    from fomm_deploy.runtime.samples import head_motion, sample_face

    if video is not None:
        from fomm_deploy.runtime.video import iter_frames

        frames = [prepare_frame(f, cfg.frame_size) for f in iter_frames(video)]
        if len(frames) < 4:
            raise ExportError(f"--calibration {video}: has {len(frames)} frames; needs at least 4")
        order = np.random.default_rng(11).permutation(len(frames))
        n_eval = min(EVALUATION_FRAMES, len(frames) // 4)
        calib = sorted(order[n_eval:n_eval + CALIBRATION_FRAMES])
        held_out = sorted(order[:n_eval])
        return np.stack([frames[i] for i in calib]), np.stack([frames[i] for i in held_out])
    face = prepare_frame(sample_face(), cfg.frame_size)
    return head_motion(face, CALIBRATION_FRAMES, seed=11), head_motion(face, EVALUATION_FRAMES, seed=12)


def _run_many(path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    session = session_from_onnx(path)
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, f) for f in feeds]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


def _wrappers(models, cfg: FommConfig) -> dict[str, torch.nn.Module]:
    return {name: flat_module(name, models, cfg.estimate_jacobian) for name in graph_specs(cfg)}


def torch_outputs(module: torch.nn.Module, spec: GraphSpec, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(feed[n]) for n in spec.input_names])
    out = out if isinstance(out, tuple) else (out,)
    return {n: o.numpy() for n, o in zip(spec.output_names, out)}


# --------------------------------------------------------------------------------------------
# Export and verification of one graph
# --------------------------------------------------------------------------------------------


def export_graph(module: torch.nn.Module, spec: GraphSpec, feed: dict[str, np.ndarray], path: Path) -> onnx.ModelProto:
    """Trace ``module`` with the TorchScript exporter at opset 16 and stamp the contract's I/O shapes.

    The dynamo exporter (torch 2.13) emits opset 18+ and cannot convert this model down to 16 (no Pad
    adapter), so the TorchScript exporter is used; its deprecation warning is expected.
    """
    args = tuple(torch.from_numpy(feed[n]) for n in spec.input_names)
    dynamic = {n: {0: "B"} for n in spec.input_names + spec.output_names}
    tmp = path.with_suffix(".trace.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=OPSET, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=dynamic, do_constant_folding=True)
    model = onnx.load(str(tmp))
    tmp.unlink()
    stamp_io_shapes(model, spec)
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path))


def _compare(spec: GraphSpec, ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], precision: str,
             tolerances: Callable[[str, str], float]) -> tuple[dict[str, dict[str, float]], list[str]]:
    report, failures = {}, []
    for name in spec.output_names:
        err = np.abs(ours[name].astype(np.float64) - ref[name].astype(np.float64))
        atol = tolerances(precision, name)
        report[name] = {"max_abs": float(err.max()), "mean_abs": float(err.mean()), "atol": atol}
        if not np.isfinite(ours[name]).all():
            failures.append(f"'{name}' has non-finite values")
        elif err.max() > atol:
            failures.append(f"'{name}' max abs error {err.max():.3g} > tolerance {atol:.3g}")
    return report, failures


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _run_many(path, [feed])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def reduced_precision_metrics(cfg: FommConfig, graph: str, ours: dict[str, np.ndarray],
                              ref: dict[str, np.ndarray]) -> dict[str, float]:
    """fp16 or int8 vs fp32: keypoint error in pixels of the model frame, prediction PSNR in dB."""
    h, w = cfg.frame_size
    if graph == "kp_detector":
        d = np.abs(ours["kp_value"] - ref["kp_value"])
        px = np.maximum(d[..., 0] * w / 2, d[..., 1] * h / 2)
        out = {"kp_max_px": float(px.max()), "kp_mean_px": float(px.mean())}
        if "kp_jacobian" in ref:
            out["jacobian_max_abs"] = float(np.abs(ours["kp_jacobian"] - ref["kp_jacobian"]).max())
        return out
    if "prediction" in ref:
        return {"prediction_psnr_db": psnr(ours["prediction"], ref["prediction"]),
                "prediction_max_abs": float(np.abs(ours["prediction"] - ref["prediction"]).max())}
    # Intermediate graphs (source_encoder): reported, judged through the graphs that consume them.
    return {f"{name}_max_abs": float(np.abs(ours[name] - ref[name]).max()) for name in ref}


def _summary(metrics: dict[str, float]) -> str:
    if "kp_max_px" in metrics:
        return f"{metrics['kp_max_px']:.2f} px max"
    if "prediction_psnr_db" in metrics:
        return f"PSNR {metrics['prediction_psnr_db']:.1f} dB"
    return "max abs " + ", ".join(f"{v:.2g}" for v in metrics.values())


def _fp16_failures(metrics: dict[str, float], budget: dict[str, float]) -> list[str]:
    failures = []
    if "kp_max_px" in metrics and metrics["kp_max_px"] > budget["kp_max_px"]:
        failures.append(f"keypoint error {metrics['kp_max_px']:.3g} px > budget {budget['kp_max_px']} px")
    if "prediction_psnr_db" in metrics and metrics["prediction_psnr_db"] < budget["prediction_min_psnr_db"]:
        failures.append(f"prediction PSNR {metrics['prediction_psnr_db']:.1f} dB < budget "
                        f"{budget['prediction_min_psnr_db']} dB")
    return failures


# --------------------------------------------------------------------------------------------
# Output folder handling
# --------------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Validate the output folder and create a staging folder beside it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output path {out_dir} is a file; pass a folder to --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"output folder {out_dir} already exists and is not empty; pass --force to replace it, "
                          "or choose another --out")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(out_dir)
    except OSError as exc:
        raise ExportError(f"cannot write the output folder {out_dir}: {exc.strerror or exc}") from None
    return staging


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging folder into place (the old folder, if any, is removed afterwards)."""
    backup = None
    if out_dir.exists():
        backup = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, backup)
    os.rename(staging, out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def check_engine_prerequisites() -> None:
    """``--engine`` needs the tensorrt package and a CUDA GPU; say exactly what is missing."""
    from fomm_deploy.runtime.names import tensorrt_missing

    missing = tensorrt_missing()
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU visible to this process")
    if missing:
        raise ExportError("--engine needs " + " and ".join(missing) + "; export without --engine and build "
                          "engines on the deployment machine (fomm-animate --backend tensorrt builds them on "
                          "first use)")


def build_engines(out_dir: Path, cfg: FommConfig, precisions: tuple[str, ...], log: Callable[[str], None]) -> list[Path]:
    """Build (or find cached) TensorRT engines for the published graphs, in ``out_dir/engines/``."""
    from fomm_deploy.runtime.backends.tensorrt import TrtBackend

    paths = []
    for precision in precisions:
        for name, spec in graph_specs(cfg).items():
            paths.append(TrtBackend.from_onnx(spec, out_dir, precision, log=log).engine_path)
    return paths


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "fomm-deploy", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# The whole export
# --------------------------------------------------------------------------------------------


def run_export(ckpt: Path, cfg: FommConfig, out_dir: Path, *, precision: str = "fp32", engine: bool = False,
               force: bool = False, progress: Callable[[str], None] | None = None,
               tolerances: Callable[[str, str], float] = tolerance,
               fp16_budget: dict[str, float] | None = None, calibration: Path | None = None) -> ExportResult:
    """Export ``ckpt`` (trained with ``cfg``) to ``out_dir`` and verify it.

    Args:
        precision: ``fp32`` (fp32 graphs); ``fp16`` / ``int8`` add ``*.fp16.onnx`` / ``*.int8.onnx``; ``all`` both.
        calibration: a video whose frames calibrate and judge the int8 graphs (default: the bundled portrait
            under synthetic head motion).
        progress: called with a short description before each step.
        tolerances: (precision, output) -> max abs error allowed against PyTorch (default: the contract's table).
    Raises:
        ExportError, CheckpointError, ContractError, ParityError: with nothing written to ``out_dir``.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if engine:
        check_engine_prerequisites()
    budget = dict(FP16_BUDGET, **(fp16_budget or {}))
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    ckpt = Path(ckpt)
    step("loading checkpoint")
    loaded = load_checkpoint(ckpt, cfg)
    staging = _prepare_out_dir(out_dir, force)
    try:
        specs = graph_specs(cfg)
        modules = _wrappers(loaded.models, cfg)  # the reference every graph is checked against
        traced = {name: with_subpixel_upsampling(m) for name, m in modules.items()}
        trace_feeds = sample_feeds(loaded.models, cfg, TRACE_BATCH, TRACE_SEED)
        check_feeds = sample_feeds(loaded.models, cfg, CHECK_BATCH, CHECK_SEED)
        if "int8" in PRECISIONS[precision]:
            calib_frames, eval_frames = calibration_frames(cfg, calibration)
            calib_feeds = real_feeds(loaded.models, cfg, calib_frames)
            eval_feeds = real_feeds(loaded.models, cfg, eval_frames)
        reports: list[GraphReport] = []
        graph_entries: dict[str, Any] = {}
        for name, spec in specs.items():
            step(f"exporting {name}.onnx")
            model = export_graph(traced[name], spec, trace_feeds[name], staging / f"{name}.onnx")
            check_graph(model, spec, align_corners=cfg.align_corners)
            path = staging / f"{name}.onnx"
            _save(model, path)
            step(f"verifying {name}.onnx in ONNX Runtime")
            ref = torch_outputs(modules[name], spec, check_feeds[name])
            ours = run_onnx(path, check_feeds[name])
            parity, failures = _compare(spec, ours, ref, "fp32", tolerances)
            if failures:
                raise ParityError(f"{name}.onnx vs PyTorch", failures)
            worst = max(parity.items(), key=lambda kv: kv[1]["max_abs"] / kv[1]["atol"])
            reports.append(GraphReport(name, path.name, "fp32", path.stat().st_size, parity,
                                       f"max abs {worst[1]['max_abs']:.2g} ({worst[0]})"))
            graph_entries[name] = {"file": path.name, "precision": "fp32", "sha256": sha256_file(path),
                                   **spec.to_dict()}
            if "fp16" in PRECISIONS[precision]:
                step(f"converting {name} to fp16")
                half = convert_to_mixed_fp16(model)
                check_graph(half, spec, align_corners=cfg.align_corners)
                half_path = staging / f"{name}.fp16.onnx"
                _save(half, half_path)
                step(f"measuring {name}.fp16.onnx against fp32")
                ours16 = run_onnx(half_path, check_feeds[name])
                metrics = reduced_precision_metrics(cfg, name, ours16, ours)
                failures = _fp16_failures(metrics, budget)
                if failures:
                    raise ParityError(f"{name}.fp16.onnx vs {name}.onnx", failures)
                summary = _summary(metrics)
                reports.append(GraphReport(f"{name}.fp16", half_path.name, "fp16", half_path.stat().st_size,
                                           {"vs_fp32": metrics}, summary))
                graph_entries[f"{name}.fp16"] = {"file": half_path.name, "precision": "fp16",
                                                 "sha256": sha256_file(half_path), **spec.to_dict()}
            if "int8" in PRECISIONS[precision] and name not in FP32_AT_INT8:
                from .quantize import quantize_int8

                step(f"quantising {name} to int8 (calibrated on real frames)")
                q_path = quantize_int8(path, staging / f"{name}.int8.onnx", calib_feeds[name])
                q_model = onnx.load(str(q_path))
                stamp_io_shapes(q_model, spec)
                check_graph(q_model, spec, align_corners=cfg.align_corners)
                _save(q_model, q_path)
                step(f"measuring {name}.int8.onnx against fp32 on held-out real frames")
                metrics = reduced_precision_metrics(cfg, name, _run_many(q_path, eval_feeds[name]),
                                                    _run_many(path, eval_feeds[name]))
                summary = _summary(metrics)
                reports.append(GraphReport(f"{name}.int8", q_path.name, "int8", q_path.stat().st_size,
                                           {"vs_fp32": metrics}, summary))
                graph_entries[f"{name}.int8"] = {"file": q_path.name, "precision": "int8",
                                                 "sha256": sha256_file(q_path), **spec.to_dict()}
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": str(ckpt.resolve()), "sha256": sha256_file(ckpt), "epoch": loaded.epoch},
            "config_name": cfg.name,
            "config": cfg.to_dict(),
            "opset": OPSET,
            "align_corners": cfg.align_corners,
            "frame_size": list(cfg.frame_size),
            "num_kp": cfg.num_kp,
            "estimate_jacobian": cfg.estimate_jacobian,
            "graphs": graph_entries,
            "parity": {
                "reference": "PyTorch model, fp32, CPU",
                "inputs": f"smooth synthetic frames, seed {CHECK_SEED}, batch {CHECK_BATCH} (tracing used seed "
                          f"{TRACE_SEED}, batch {TRACE_BATCH})",
                "fp16_budget": budget,
                "int8_inputs": (f"real frames: {calibration or 'the bundled portrait under synthetic head motion'}; "
                                f"{len(calib_frames)} calibration frames, judged on {len(eval_frames)} other "
                                "frames" if "int8" in PRECISIONS[precision] else None),
                "results": {r.name: r.parity for r in reports},
            },
            "tools": _versions(),
        }
        manifest_path = staging / "manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        step("publishing")
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if engine:  # after publishing: engines are cached artefacts of the graphs, each written atomically
        step("building TensorRT engines")
        trt_precisions = tuple(p for p in PRECISIONS[precision] if p in ("fp32", "fp16"))
        build_engines(out_dir, cfg, trt_precisions, log=lambda m: step(m))
    return ExportResult(out_dir, manifest, reports, time.perf_counter() - t0)
