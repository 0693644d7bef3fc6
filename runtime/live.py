"""``fomm-live`` / ``python runtime/live.py``: drive a portrait with your face from a webcam, in real time.

Pipeline (each stage its own thread, joined by newest-wins slots, so lag never accumulates):

    camera -> [capture] -> newest frame -> [framing: face box, smoothed crop] -> newest crop
           -> [inference: keypoints + generator] -> newest result -> [main: preview, recording, keys]

A stage that is slower than the one before it simply skips the frames it had no time for; every
frame carries its capture time, so the capture-to-display latency is measured, not guessed.
No manual alignment: the first well-framed frame becomes the reference pose (press ``r`` to redo it).

This module is the command line only (options, backend choice, the report); the pipeline's parts are in
``runtime/webcam/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# What this command imports (module, the package that provides it), checked first when it runs as a script.
REQUIRED = (("click", "click"), ("numpy", "numpy"), ("cv2", "opencv-python"), ("yaml", "pyyaml"),
            ("onnxruntime", "onnxruntime"), ("imageio_ffmpeg", "imageio-ffmpeg"))


def missing_packages(required=REQUIRED) -> list[str]:
    """The packages of ``required`` this Python cannot import: the name for a missing one, the name and the
    reason for one that is installed but does not load (OpenCV without the system's libGL)."""
    import importlib

    missing = []
    for module, package in required:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing.append(package if exc.name in (module, None) else f"{package} (it needs {exc.name})")
        except ImportError as exc:
            missing.append(f"{package} (installed but it does not load: {str(exc).splitlines()[0]})")
    return missing


if __package__ in (None, ""):  # run as a script from a checkout: python runtime/live.py
    # A Python without the project's packages (not the set-up .venv) says what to install, not a traceback.
    _missing = missing_packages()
    if _missing:
        sys.exit(f"Error: python runtime/live.py needs {', '.join(_missing)}, which {sys.executable} lacks; set "
                 "up the checkout with 'make setup' and run '.venv/bin/python runtime/live.py' (or .venv/bin/"
                 "fomm-live), or install into your environment with: pip install -e \".[cpu]\"")
    _here = Path(__file__).resolve().parent
    # Python put runtime/ itself first on sys.path; its modules must be imported as fomm_deploy.runtime.*.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    import fomm_deploy.runtime  # noqa: E402,F401 - the checkout's package (fomm_deploy/__init__.py)
    __package__ = "fomm_deploy.runtime"

import click  # noqa: E402
import numpy as np  # noqa: E402

from .core.cli_common import CONTEXT, user_errors, version_option  # noqa: E402
from .core.errors import ImageError, InputError  # noqa: E402
from .core.fileio import check_output_file  # noqa: E402
from .backends.cuda import tensorrt_missing  # noqa: E402
from .core.names import check_max_frames  # noqa: E402
from .core.options import (FiniteFloat, backend_option, device_option, max_frames_option, onnx_dir_option,  # noqa: E402
                           precision_option, providers_option, relative_option)
from .media.framing import PORTRAIT_CROPS  # noqa: E402
from .media.preprocess import list_portraits  # noqa: E402
from .webcam.capture import parse_camera  # noqa: E402
from .webcam.keys import keys_help_text, parse_key_script  # noqa: E402
from .webcam.preview import parse_output_size  # noqa: E402
from .webcam.session import LiveOptions, LiveSession  # noqa: E402
from .webcam.virtualcam import require_pyvirtualcam  # noqa: E402


def has_display() -> bool:
    """Whether a preview window can be shown (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def choose_backend(requested: str, exported, providers: tuple[str, ...] | None = None) -> tuple[str, str, str]:
    """(backend, precision, why). ``auto``: TensorRT fp16 when TensorRT is usable and the fp16 graphs were
    exported; else ONNX Runtime, with the int8 graphs on a CPU when the export has them (about twice as
    fast as fp32 there), fp32 otherwise (or when ``providers`` put ONNX Runtime on a GPU)."""
    if requested != "auto":
        return requested, ("fp16" if requested == "tensorrt" else "fp32"), "as asked"
    missing = tensorrt_missing()
    if not missing and exported.has_precision("fp16"):
        return "tensorrt", "fp16", "chosen automatically: TensorRT and the fp16 graphs are there"
    no_trt = "no fp16 graphs for TensorRT in the export" if not missing else "no TensorRT here"
    if providers and any(p != "cpu" for p in providers):
        return "onnxruntime", "fp32", f"chosen automatically: {no_trt}; int8 is for CPU, --providers asks for a GPU"
    if exported.has_precision("int8"):
        return "onnxruntime", "int8", (f"chosen automatically: {no_trt}; on a CPU the exported int8 graphs run "
                                       "about twice as fast as fp32 (--precision fp32 for the reference)")
    return "onnxruntime", "fp32", f"chosen automatically: {no_trt}, no int8 graphs in the export"


def check_output(output: Path, camera: str, force: bool) -> None:
    """Refuse an ``--out`` that cannot or must not be written (the --camera video included), before the
    camera opens (``fileio.check_output_file``)."""
    kind, target = parse_camera(camera)
    check_output_file(output, inputs={"--camera": Path(str(target)) if kind == "file" else None}, force=force,
                      option="--out", suffixes=(".mp4",))


@click.command(context_settings=CONTEXT)
@click.option("--source", required=True, type=click.Path(exists=False, path_type=Path),
              help="Portrait to animate (an image, or a video: its first frame), or a folder of portraits "
              "(its images and videos, by name; 1-9 pick one, n/p switch, f finds the one whose pose matches "
              "yours).")
@onnx_dir_option()
@click.option("--camera", default="0", show_default=True,
              help="Camera index (0, 1, ...), device (/dev/video0), stream URL, or a video file standing in for a camera.")
@click.option("--loop", is_flag=True, help="With a video file as camera: start again at its end.")
@backend_option("auto", auto=True, help="auto: TensorRT fp16 when TensorRT and the fp16 graphs are there, else "
               "ONNX Runtime, int8 on a CPU when the export has int8 graphs (about twice as fast as fp32); "
               "onnxruntime, tensorrt, or torch (the PyTorch reference, slow).")
@precision_option(None, help="Override the precision the backend choice implies (fp32, fp16, int8).")
@providers_option()
@device_option()
@click.option("--crop", "source_crop", type=click.Choice(PORTRAIT_CROPS), default="auto", show_default=True,
              help="How the portrait is framed, by the rule fomm-animate and fomm-serve use (runtime/FRAMING.md): "
              "auto: the square around its face with a 10% margin (the centre square, with a warning, when "
              "no face is found; follow is the same for a still portrait); centre: the centre square; none: the "
              "whole portrait, padded to a square. The camera's framing is --no-crop and --crop-scale.")
@click.option("--no-crop", is_flag=True, help="Use the centre square of the camera instead of following the face "
              "(the camera only; the portrait's framing is --crop).")
@click.option("--crop-scale", default=2.0, show_default=True, type=FiniteFloat(),
              help="Crop side relative to the detected face (> 0).")
@click.option("--smoothing", default=0.6, show_default=True, type=FiniteFloat(0, 0.99),
              help="Crop box smoothing over time (0: none).")
@relative_option()
@click.option("--adapt-scale/--no-adapt-scale", default=True, show_default=True,
              help="Scale your motion to the portrait's keypoint spread.")
@click.option("--mirror", is_flag=True, help="Mirror the camera (selfie view).")
@click.option("--no-window", is_flag=True, help="Headless: no preview window (use with --out or --virtual-cam).")
@click.option("--no-overlay", is_flag=True, help="Start without the fps/latency overlay (o toggles it).")
@click.option("--ghost", is_flag=True, help="Start with the ghost shown: the portrait blended over the camera crop, "
              "to line your face up with it (g toggles it; off by default, see the keys below).")
@click.option("--virtual-cam", is_flag=True, help="Send the portrait to a virtual camera (pyvirtualcam), at "
              "--output-size.")
@click.option("--out", "--output", "output", type=click.Path(path_type=Path), default=None,
              help="Record to this .mp4 (the preview, camera | portrait, or the portrait alone: --output-size), "
              "in real time (a frame lasts as long as it was on screen). Finished on q, Ctrl-C or SIGTERM.")
@click.option("--output-size", "--out-size", "output_size", default="preview", show_default=True,
              metavar="preview|portrait|WxH",
              help="What --out records and --virtual-cam sends. preview: --out records the preview (camera | "
              "portrait, with the overlay) and the virtual camera gets the portrait at the model's size; "
              "portrait: both get the portrait alone at the model's size; WxH (e.g. 1280x720, even numbers): "
              "both get the portrait alone, scaled to fit and letterboxed (black bars) to that size.")
@click.option("--keys", "key_script", default=None, metavar="FRAME:KEYS,...",
              help="Press keys at given frames, as if typed (headless runs, demos, tests): e.g. 20:g,40:ww,60:2 "
              "presses g at the 20th frame shown, w twice at the 40th, 2 at the 60th; esc for Esc. Real keys "
              "in the window still work.")
@click.option("--force", is_flag=True, help="Replace an existing --out file (never the --camera video).")
@max_frames_option(help="Stop after this many output frames (at least 1).")
@click.option("--max-seconds", type=FiniteFloat(), default=None, help="Stop after this many seconds (> 0).")
@version_option()
@user_errors
def main(source: Path, onnx_dir: Path, camera: str, loop: bool, backend: str, precision: str | None,
         providers: tuple[str, ...] | None, device: str | None, source_crop: str, no_crop: bool, crop_scale: float, smoothing: float,
         relative: bool, adapt_scale: bool, mirror: bool, no_window: bool, no_overlay: bool, ghost: bool,
         virtual_cam: bool, output: Path | None, output_size: str, key_script: str | None, force: bool,
         max_frames: int | None, max_seconds: float | None) -> None:
    """Drive a portrait with your face from a webcam, in real time.

    Look at the camera: the first well-framed frame becomes the reference pose, and the portrait follows
    your head, eyes and mouth from there. No manual alignment; press r to recalibrate, h for all keys.

    q, Esc, closing the window, Ctrl-C and SIGTERM all end the session the same way: the recording
    (--out) is finished and kept, and the command exits 0. A signal before the session has started
    (while the model loads) exits 128 + its number (130, 143) with nothing written. Errors exit 1 (2 for
    malformed options).

    The ghost (g) blends the portrait over the camera crop: line your face up with it (move your head, or
    zoom and move the crop with w/s and i/j/k/l), then press r to take the reference pose there. It is off
    by default because calibration is automatic: it would only cover your face.

    \b
    Keys (in the window, or scripted with --keys):
    KEYS_TABLE

    \b
    Examples (exported/vox: an export of upstream's vox-cpk.pth.tar, see fomm-export --help):
      fomm-live --onnx exported/vox --source avatar.jpg
      fomm-live --onnx exported/vox --source portraits/ --camera 1 --virtual-cam --output-size 1280x720
      fomm-live --onnx exported/vox --source avatar.jpg --camera clip.mp4 --no-window --out session.mp4
      fomm-live --onnx exported/vox --source portraits/ --camera clip.mp4 --no-window --out-size portrait \\
        --out p.mp4 --keys 30:f
    """
    from .graphs import load_exported, open_animator

    if not crop_scale > 0:
        raise InputError(f"--crop-scale must be greater than 0 (the crop side over the face side), got {crop_scale}")
    check_max_frames(max_frames)
    if max_seconds is not None and not max_seconds > 0:
        raise InputError(f"--max-seconds must be greater than 0, got {max_seconds}")
    if no_window and output is None and not virtual_cam:
        raise InputError("--no-window alone shows and records nothing; add --out FILE.mp4 or --virtual-cam")
    size = parse_output_size(output_size)
    if size != "preview" and output is None and not virtual_cam:
        raise InputError(f"--output-size {output_size} is for --out and --virtual-cam; add one of them")
    keys = parse_key_script(key_script) if key_script is not None else ()
    if output is not None:
        check_output(output, camera, force)
    if not no_window and not has_display():
        raise InputError("no display to show the preview on (DISPLAY is not set); use --no-window with "
                         "--out FILE or --virtual-cam")
    if virtual_cam:
        require_pyvirtualcam()  # before the camera opens
    if not source.exists():
        raise ImageError(f"portrait not found: {source}")
    portraits = list_portraits(source)
    exported = load_exported(onnx_dir)
    kind, prec, why = choose_backend(backend, exported, providers)
    if precision is not None and precision != prec:
        prec, why = precision, f"{why}; --precision {precision} as asked"
    animator = open_animator(exported, kind, prec, providers=providers, device=device, relative=relative,
                             adapt_scale=adapt_scale, on_compile=lambda m: click.echo(m, err=True))
    click.echo(f"backend: {kind} {prec}, graphs {animator.graphs} ({why})", err=True)
    options = LiveOptions(camera=camera, loop=loop, crop=not no_crop, source_crop=source_crop, crop_scale=crop_scale,
                          smoothing=smoothing,
                          mirror=mirror, window=not no_window, overlay=not no_overlay, ghost=ghost,
                          virtual_cam=virtual_cam, output=output, output_size=size, keys=keys,
                          max_frames=max_frames, max_seconds=max_seconds)
    session = LiveSession(animator, portraits, options, log=lambda m: click.echo(m, err=True),
                          hold_signals_after_stop=True)
    report = session.run()
    lat = np.array(report.latencies_ms) if report.latencies_ms else np.zeros(1)
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in report.stage_ms.items())
    click.echo(f"{report.shown} frames shown of {report.captured} captured ({report.dropped_capture + report.dropped_framing} "
               f"dropped), {report.fps:.1f} fps; capture-to-display latency median {np.median(lat):.0f} ms, "
               f"p90 {np.percentile(lat, 90):.0f} ms; {stages}; ended: {report.reason or report.camera_status}")
    if report.output is not None:
        w, h = report.recorded_size
        click.echo(f"recorded {report.output}: {w}x{h}, {report.recorded_seconds:.1f} s ({report.recorded_frames} "
                   f"frames) of a {report.seconds:.1f} s session")


main.help = main.help.replace("    KEYS_TABLE", keys_help_text("      "))


if __name__ == "__main__":
    # Usage lines show how the command was called: "python runtime/live.py" from a checkout.
    main(prog_name=f"python {sys.argv[0]}" if sys.argv[0].endswith(".py") else None)
