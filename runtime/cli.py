"""``fomm-animate`` and ``fomm-compare``: the runtime's command line (torch only for ``--backend torch``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

from .cli_common import CONTEXT, user_errors, version_option
from .errors import FommError, InputError, ParityError
from .names import (adapt_scale_option, backend_option, ckpt_option, device_option, local_file, onnx_dir_option,
                    precision_option, providers_option, relative_option)


@click.command(context_settings=CONTEXT)
@click.option("--source", required=True, metavar="FILE", callback=local_file,
              help="Still image to animate (any size; PNG, JPEG with its EXIF rotation, ...), or a video whose "
                   "first frame is used.")
@click.option("--driving", required=True, metavar="FILE", callback=local_file,
              help="Driving video (its motion is transferred to the source; its timing and audio are kept).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output video (.mp4, H.264, with the driving video's audio).")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never an input).")
@onnx_dir_option()
@backend_option()
@precision_option()
@providers_option()
@device_option()
@relative_option()
@adapt_scale_option()
@click.option("--best-frame", is_flag=True,
              help="Use the driving frame whose pose is closest to the source's as the reference (reads the "
                   "video twice; relative motion only).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 64), help="Frames per inference.")
@click.option("--side-by-side", is_flag=True, help="Write source | driving | result instead of the result alone.")
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default="crop", show_default=True,
              help="How non-square images and frames are made square.")
@ckpt_option(help="Checkpoint for --backend torch (default: the one recorded in the manifest).")
@click.option("--split/--no-split", default=None,
              help="Use the per-source split graphs (source encoded once; default when exported), or the "
                   "reference generator graph for every frame.")
@version_option()
@user_errors
def animate_main(source: Path, driving: Path, out: Path, force: bool, onnx_dir: Path, backend: str, precision: str,
                 providers: tuple[str, ...] | None, device: str | None, relative: bool, adapt_scale: bool,
                 best_frame: bool, batch: int, side_by_side: bool, fit: str, ckpt: Path | None,
                 split: bool | None) -> None:
    """Animate the SOURCE image with the motion of the DRIVING video and write an MP4.

    The output follows the driving video's timestamps (variable frame rates and a video that starts
    after its audio stay in sync) at its nominal frame rate, with its audio padded or cut to the video.
    Nothing is written until the video is complete: an interrupted run leaves no file.

    \b
    Example:
      fomm-export --ckpt vox-cpk.pth.tar --out exported
      fomm-animate --source face.jpg --driving talk.mp4 --out result.mp4
      fomm-animate ... --backend torch --device cuda --precision fp16   (a GPU without TensorRT)
    """
    from tqdm import tqdm

    from .animator import find_best_frame
    from .fileio import check_output_file
    from .graphs import load_exported, open_animator
    from .keypoints import KP
    from .preprocess import load_source, prepare_frame, to_uint8
    from .video import VideoWriter, iter_timed_frames, open_video

    check_output_file(out, inputs={"--source": source, "--driving": driving}, force=force, suffixes=(".mp4",))
    if ckpt is not None and backend != "torch":
        raise InputError("--ckpt is read only by --backend torch (the exported graphs hold the weights); drop it, "
                         "or add --backend torch")
    if providers and backend != "onnxruntime":
        raise InputError(f"--providers chooses ONNX Runtime's providers; --backend {backend} does not use them")
    if best_frame and not relative:
        raise InputError("--best-frame picks the reference pose of relative motion; with --absolute there is "
                         "no reference: drop one of them")
    exported = load_exported(onnx_dir)
    h, w = exported.frame_size
    source_img = load_source(source, max_side=2 * max(h, w))  # fail on a bad image before any heavy work
    cap, info = open_video(driving)
    cap.release()
    animator = open_animator(exported, backend, precision, split=split, ckpt=ckpt, providers=providers,
                             device=device, relative=relative, adapt_scale=adapt_scale, fit=fit)
    animator.set_source(source_img)
    _warn_without_face(source_img, source)
    total = info.frame_count or None

    def driving_batches() -> Iterator[tuple[np.ndarray, list[float]]]:
        """Model frames ``batch`` at a time (the last batch may be shorter), with their times in seconds."""
        chunk, times = [], []
        for frame, t in iter_timed_frames(driving):
            chunk.append(prepare_frame(frame, (h, w), fit=fit))
            times.append(t)
            if len(chunk) == batch:
                yield np.stack(chunk), times
                chunk, times = [], []
        if chunk:
            yield np.stack(chunk), times

    if best_frame:
        values = []
        with tqdm(total=total, desc="finding best frame", unit="frame", disable=None) as bar:
            for frames, _ in driving_batches():
                values.append(animator.keypoints(frames))
                bar.update(len(frames))
        kp_all = KP(np.concatenate([v.value for v in values]),
                    None if values[0].jacobian is None else np.concatenate([v.jacobian for v in values]))
        best = find_best_frame(animator.source_keypoints, kp_all.value)
        animator.set_reference_keypoints(KP(kp_all.value[best:best + 1],
                                            None if kp_all.jacobian is None else kp_all.jacobian[best:best + 1]))
        click.echo(f"best frame: {best} (used as the reference pose)", err=True)

    width = 3 * w if side_by_side else w
    source_u8 = animator.source_uint8()
    start = time.perf_counter()
    with VideoWriter(out, info.fps, (width, h), audio_from=driving, audio_start=info.video_start) as writer, \
            tqdm(total=total, desc="animating", unit="frame", disable=None) as bar:
        for frames, times in driving_batches():
            for frame, t, result in zip(frames, times, animator.animate_prepared(frames)):
                if side_by_side:
                    result = np.concatenate([source_u8, to_uint8(frame), result], axis=1)
                writer.write(result, t - info.video_start)
            bar.update(len(frames))
    seconds = time.perf_counter() - start
    audio = "with audio" if writer.with_audio else "no audio in the driving video"
    graphs = "split graphs" if animator.generator_frame is not None else "reference generator"
    click.echo(f"wrote {out}: {writer.frames} frames ({writer.duration:.2f} s at {info.fps:.2f} fps) from "
               f"{writer.received} driving frames, {width}x{h}, {audio}; {writer.received / seconds:.1f} frames/s "
               f"with {backend} {precision} ({graphs})")


def _warn_without_face(image: np.ndarray, path: Path) -> None:
    """Say so when the source shows no face: FOMM animates faces, centred with some margin."""
    from .preprocess import to_uint8

    try:
        from .webcam.framing import FaceFramer

        framer = FaceFramer()
    except FommError:  # no face detector here: nothing to say
        return
    if framer.detect(to_uint8(image[..., ::-1])) is None:
        click.echo(f"warning: no face found in {path}; FOMM animates a face centred in the frame with some "
                   "margin (crop the portrait so, or expect the background to move)", err=True)


# ------------------------------------------------------------------------------------------------
# fomm-compare
# ------------------------------------------------------------------------------------------------


def _compare_feeds(kind: str, exported, reference: dict, batch: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """One feed per graph: ``batch`` driving frames animating one source, keypoints (and the source encoding)
    from the reference backends, so both backends see the same inputs."""
    from .feeds import generator_feed, kp_from_outputs
    from .preprocess import prepare_frame, to_nchw
    from .samples import head_motion, sample_face

    h, w = exported.frame_size
    if kind == "real":
        frames = head_motion(prepare_frame(sample_face(), (h, w)), batch + 1, seed=seed)
        source, driving = to_nchw(frames[:1]), to_nchw(frames[1:])
    else:
        rng = np.random.default_rng(seed)
        source = rng.uniform(0, 1, (1, 3, h, w)).astype(np.float32)
        driving = rng.uniform(0, 1, (batch, 3, h, w)).astype(np.float32)
    kp_source = kp_from_outputs(reference["kp_detector"].infer({"image": source}))
    kp_driving = kp_from_outputs(reference["kp_detector"].infer({"image": driving}))
    feeds = {"kp_detector": {"image": driving}, "generator": generator_feed({"source": source}, kp_source, kp_driving)}
    if "source_encoder" in reference:
        encoded = {k: v.copy() for k, v in reference["source_encoder"].infer({"source": source}).items()}
        feeds["source_encoder"] = {"source": source}
        feeds["generator_frame"] = generator_feed(encoded, kp_source, kp_driving)
    return feeds


@click.command(context_settings=CONTEXT)
@onnx_dir_option()
@click.option("--backends", default="torch,onnxruntime", show_default=True, metavar="A,B",
              help="Two backends to compare (onnxruntime, tensorrt, torch); the first is the reference.")
@precision_option(help="Precision of the second backend (the first, the reference, always runs fp32); torch runs "
                       "fp16 on --device cuda only.")
@click.option("--inputs", type=click.Choice(["real", "random"]), default="real", show_default=True,
              help="real: the bundled portrait under synthetic head motion; random: uniform noise images.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Driving frames per comparison (and the batch size the graphs are run at).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic head motion or random images.")
@click.option("--ckpt", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint for the torch backend (default: the manifest's).")
@click.option("--config", default=None, help="Config for the torch backend (default: the manifest's).")
@providers_option()
@device_option()
@version_option()
@user_errors
def compare_main(onnx_dir: Path, backends: str, precision: str, inputs: str, batch: int, seed: int,
                 ckpt: Path | None, config: str | None, providers: tuple[str, ...] | None,
                 device: str | None) -> None:
    """Run the same inputs through two backends and report every output's error against the tolerance table.

    Exits non-zero when an output is over its tolerance. This is how a TensorRT engine is checked against
    ONNX Runtime, and ONNX Runtime against the PyTorch model.

    \b
    Example:
      fomm-compare --onnx exported --backends torch,onnxruntime
      fomm-compare --onnx exported --backends onnxruntime,tensorrt --precision fp16
      fomm-compare --onnx exported --backends onnxruntime,torch --precision fp16 --device cuda
    """
    from .compare import compare
    from .graphs import GRAPHS, SPLIT_GRAPHS, load_exported, make_backend

    names = [b.strip() for b in backends.split(",") if b.strip()]
    if len(names) != 2:
        raise InputError(f"--backends takes exactly two names separated by a comma, got {backends!r}")
    if names[0] == names[1] and precision == "fp32":
        raise InputError(f"--backends {backends} compares {names[0]} at fp32 with itself; name two backends, or "
                         "compare against another --precision")
    exported = load_exported(onnx_dir)
    split_files = [("fp32" if name == "torch" else p) for name, p in zip(names, ("fp32", precision))]
    graphs = list(GRAPHS) + (list(SPLIT_GRAPHS) if all(exported.has_split(p) for p in split_files) else [])
    # The first backend is the fp32 reference; the second runs --precision (and selects the tolerances).
    # --device goes to the torch backends (the others refuse it: names.check_backend_device).
    precisions = ["fp32", precision]
    runners = [{g: make_backend(name, exported, g, prec, ckpt=ckpt, config=config, providers=providers,
                                device=device if name == "torch" else None).activate()
                for g in graphs} for name, prec in zip(names, precisions)]
    feeds = _compare_feeds(inputs, exported, runners[0], batch, seed)
    click.echo(f"{names[0]} (reference) vs {names[1]} ({precisions[1]}), {inputs} inputs, batch {batch}")
    header = f"{'graph':<16}{'output':<16}{'max abs':>11}{'mean abs':>11}{'tolerance':>11}  {'':<6}extra"
    click.echo(header)
    click.echo("-" * len(header))
    failures = []
    for graph in graphs:
        ref = {k: v.copy() for k, v in runners[0][graph].infer(feeds[graph]).items()}
        result = compare(graph, runners[1][graph].infer(feeds[graph]), ref, precision=precisions[1],
                         frame_size=exported.frame_size)
        failures += [f"{graph}.{f}" for f in result.tolerance_failures()]
        for output, e in result.outputs.items():
            ok = e.finite and e.max_abs <= result.tolerances[output]
            extra = (f"PSNR {e.psnr_db:.1f} dB" if e.psnr_db is not None else
                     f"{e.kp_max_px:.3f} px" if e.kp_max_px is not None else "")
            click.echo(f"{graph:<16}{output:<16}{e.max_abs:>11.3g}{e.mean_abs:>11.3g}{result.tolerances[output]:>11.3g}"
                       f"  {'ok' if ok else 'OVER':<6}{extra}")
    if failures:
        raise ParityError(f"{names[1]} vs {names[0]}", failures)
    click.echo("all outputs within tolerance")
