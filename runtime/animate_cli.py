"""``fomm-animate``: the command line of :func:`animate.animate` (torch only for ``--backend torch``)."""

from __future__ import annotations

from pathlib import Path

import click

from .animate import OUT_FORMATS, AnimateOptions, animate
from .core.cli_common import CONTEXT, user_errors, version_option
from .core.options import (FiniteFloat, adapt_scale_option, backend_option, ckpt_option, compile_option,
                           device_option, frame_step_option, local_file,
                           max_frames_option, onnx_dir_option, precision_option, providers_option, relative_option)
from .media.framing import PORTRAIT_CROPS


@click.command(context_settings=CONTEXT)
@click.option("--source", required=True, metavar="FILE|FOLDER", callback=local_file,
              help="Still image to animate (any size; PNG, JPEG with its EXIF rotation, ...), a video whose "
                   "first frame is used, or a folder of portraits (its images and videos, by name; one output "
                   "each, into --out as a folder).")
@click.option("--driving", required=True, metavar="FILE", callback=local_file,
              help="Driving video (its motion is transferred to the source; its timing and audio are kept).")
@click.option("--out", "out", required=True, metavar="PATH",
              help="Output: .mp4 (H.264, AAC audio), .webm (VP9, Opus audio), .gif (looping, no audio), or a "
                   "folder of PNG frames (a path ending in / or an existing empty folder). With a --source "
                   "folder: the folder the outputs go into (named after the portraits, in --format).")
@click.option("--format", "out_format", type=click.Choice(list(OUT_FORMATS)), default=None,
              help="Format of each output with a --source folder (default mp4); otherwise --out's name decides.")
@click.option("--force", is_flag=True, help="Replace --out (and --still) if it exists (never an input).")
@onnx_dir_option()
@backend_option()
@precision_option()
@providers_option()
@device_option()
@relative_option()
@adapt_scale_option()
@click.option("--crop", type=click.Choice(PORTRAIT_CROPS), default=None,
              help="Framing. auto (default): the source is cropped around its face and the driving video gets "
                   "one crop box for the whole clip, around every position of its face (the crop never "
                   "moves); follow: a smoothed box that follows the driving face; centre: the centre square "
                   "(also what auto falls back to without a face); none: no crop, --fit pads or stretches.")
@click.option("--paste-back", is_flag=True,
              help="Blend the animated crop back into the full-resolution source (feathered edge): the output "
                   "has the source's size and only the head region moves. MP4/WebM drop an odd last row or "
                   "column.")
@click.option("--size", type=click.IntRange(16, 4096), default=None, metavar="N",
              help="Side of the output frame, of each of its three panels with --side-by-side (not with "
                   "--paste-back). Default: the model's frame size; larger sizes are upscaled with Lanczos.")
@click.option("--best-frame", is_flag=True,
              help="Use the driving frame whose pose is closest to the source's as the reference (reads the "
                   "video twice; relative motion only).")
@click.option("--reference-frame", type=click.IntRange(0), default=None, metavar="N",
              help="Use driving frame N (0 = the first frame at or after --start) as the reference pose "
                   "(upstream's --best_frame N; relative motion only).")
@click.option("--start", type=FiniteFloat(0), default=0.0, show_default=True, metavar="SECONDS",
              help="Use the driving video from this time on (seconds from its first frame).")
@click.option("--end", type=FiniteFloat(0, min_open=True), default=None, metavar="SECONDS",
              help="Use the driving video up to this time (seconds from its first frame; default: its end).")
@max_frames_option(help="Use at most this many driving frames (from --start on; at least 1): a quick preview.")
@click.option("--no-audio", is_flag=True, help="Write no audio (default: the driving video's, when it has any).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 64), help="Frames per inference.")
@click.option("--side-by-side", is_flag=True, help="Write source | driving | result instead of the result alone.")
@click.option("--still", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE.png",
              help="Also write the output's frame from the middle of the clip as a PNG (before video compression): "
                   "a picture for a page or a thumbnail. Written once the output is complete.")
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default=None,
              help="With --crop none: how non-square images and frames are made square (pad or stretch; "
                   "default pad). --fit pad/stretch alone implies --crop none; crop is --crop centre.")
@ckpt_option(" for --backend torch (default: the one recorded in the manifest).")
@click.option("--split/--no-split", default=None,
              help="Use the per-source split graphs (source encoded once; default when exported), or the "
                   "reference generator graph for every frame.")
@frame_step_option()
@compile_option()
@version_option()
@user_errors
def animate_main(source: Path, driving: Path, out: str, out_format: str | None, force: bool, onnx_dir: Path,
                 backend: str, precision: str, providers: tuple[str, ...] | None, device: str | None, relative: bool,
                 adapt_scale: bool,
                 crop: str | None, paste_back: bool, size: int | None, best_frame: bool,
                 reference_frame: int | None, start: float, end: float | None, max_frames: int | None, no_audio: bool,
                 batch: int,
                 side_by_side: bool, still: Path | None, fit: str | None, ckpt: Path | None,
                 split: bool | None, frame_step: bool | None, compile: bool | None) -> None:
    """Animate the SOURCE image with the motion of the DRIVING video and write a video (or frames).

    The source is cropped around its face and the driving video around its face's path (--crop); the
    output follows the driving video's timestamps (variable frame rates and a video that starts after its
    audio stay in sync) at its nominal frame rate, with its audio padded or cut to the video.
    Nothing is written until an output is complete: an interrupted run leaves no file.

    \b
    Examples (exported/vox: upstream's vox-cpk.pth.tar, exported by the first line; make demo's is exported/demo):
      fomm-export --ckpt vox-cpk.pth.tar --config vox-256 --out exported/vox
      fomm-animate --onnx exported/vox --source face.jpg --driving talk.mp4 --out result.mp4
      fomm-animate --onnx exported/vox ... --backend torch --device cuda --precision fp16   (a GPU without TensorRT)
      fomm-animate --onnx exported/vox --source portrait.png --driving talk.mp4 --out result.webm --paste-back
      fomm-animate --onnx exported/vox --source portraits/ --driving talk.mp4 --out results/ --format gif
      fomm-animate --onnx exported/vox --source face.jpg --driving talk.mp4 --out side.mp4 --side-by-side \\
        --size 256 --still side.png
    """
    options = options_from_cli(dict(out_format=out_format, force=force, onnx_dir=onnx_dir, backend=backend,
                                    precision=precision, providers=providers, device=device, relative=relative,
                                    adapt_scale=adapt_scale, crop=crop, paste_back=paste_back, size=size,
                                    best_frame=best_frame, reference_frame=reference_frame, start=start, end=end,
                                    max_frames=max_frames, no_audio=no_audio, batch=batch,
                                    side_by_side=side_by_side, still=still, fit=fit, ckpt=ckpt, split=split,
                                    frame_step=frame_step, compile=compile))
    animate(source, driving, out, options, log=lambda message: click.echo(message, err=True),
            on_output=lambda written: click.echo(written.summary()))


def options_from_cli(params: dict) -> AnimateOptions:
    """fomm-animate's click parameters (by their names, any subset but the three paths) -> AnimateOptions.

    The one place where an option's name differs: ``--no-audio`` is ``AnimateOptions.audio`` inverted.
    """
    params = dict(params)
    if "no_audio" in params:
        params["audio"] = not params.pop("no_audio")
    return AnimateOptions(**params)
