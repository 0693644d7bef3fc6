"""``fomm-animate`` and ``fomm-compare``: the runtime's command line (torch only for ``--backend torch``)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from .cli_common import CONTEXT, user_errors, version_option
from .errors import InputError, ParityError
from .names import (adapt_scale_option, backend_option, ckpt_option, device_option, local_file, onnx_dir_option,
                    precision_option, providers_option, relative_option)


OUT_FORMATS = {"mp4": ".mp4", "webm": ".webm", "gif": ".gif", "frames": "/"}


@click.command(context_settings=CONTEXT)
@click.option("--source", required=True, metavar="FILE|FOLDER", callback=local_file,
              help="Still image to animate (any size; PNG, JPEG with its EXIF rotation, ...), a video whose "
                   "first frame is used, or a folder of portraits (one output each, into --out as a folder).")
@click.option("--driving", required=True, metavar="FILE", callback=local_file,
              help="Driving video (its motion is transferred to the source; its timing and audio are kept).")
@click.option("--out", "out", required=True, metavar="PATH",
              help="Output: .mp4 (H.264, AAC audio), .webm (VP9, Opus audio), .gif (looping, no audio), or a "
                   "folder of PNG frames (a path ending in / or an existing empty folder). With a --source "
                   "folder: the folder the outputs go into (named after the portraits, in --format).")
@click.option("--format", "out_format", type=click.Choice(list(OUT_FORMATS)), default=None,
              help="Format of each output with a --source folder (default mp4); otherwise --out's name decides.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never an input).")
@onnx_dir_option()
@backend_option()
@precision_option()
@providers_option()
@device_option()
@relative_option()
@adapt_scale_option()
@click.option("--crop", type=click.Choice(["auto", "follow", "centre", "none"]), default=None,
              help="Framing. auto (default): the source is cropped around its face and the driving video gets "
                   "one crop box for the whole clip, around every position of its face (the crop never "
                   "moves); follow: a smoothed box that follows the driving face; centre: the centre square "
                   "(also what auto falls back to without a face); none: no crop, --fit pads or stretches.")
@click.option("--paste-back", is_flag=True,
              help="Blend the animated crop back into the full-resolution source (feathered edge): the output "
                   "has the source's size and only the head region moves. MP4/WebM drop an odd last row or "
                   "column.")
@click.option("--size", type=click.IntRange(16, 4096), default=None, metavar="N",
              help="Output frame side without --paste-back (default: the model's frame size; upscaled with "
                   "Lanczos).")
@click.option("--best-frame", is_flag=True,
              help="Use the driving frame whose pose is closest to the source's as the reference (reads the "
                   "video twice; relative motion only).")
@click.option("--reference-frame", type=click.IntRange(0), default=None, metavar="N",
              help="Use driving frame N (0 = the first frame at or after --start) as the reference pose "
                   "(upstream's --best_frame N; relative motion only).")
@click.option("--start", type=click.FloatRange(0), default=0.0, show_default=True, metavar="SECONDS",
              help="Use the driving video from this time on (seconds from its first frame).")
@click.option("--end", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Use the driving video up to this time (seconds from its first frame; default: its end).")
@click.option("--no-audio", is_flag=True, help="Write no audio (default: the driving video's, when it has any).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 64), help="Frames per inference.")
@click.option("--side-by-side", is_flag=True, help="Write source | driving | result instead of the result alone.")
@click.option("--fit", type=click.Choice(["crop", "pad", "stretch"]), default=None,
              help="With --crop none: how non-square images and frames are made square (pad or stretch; "
                   "default pad). --fit pad/stretch alone implies --crop none; crop is --crop centre.")
@ckpt_option(help="Checkpoint for --backend torch (default: the one recorded in the manifest).")
@click.option("--split/--no-split", default=None,
              help="Use the per-source split graphs (source encoded once; default when exported), or the "
                   "reference generator graph for every frame.")
@version_option()
@user_errors
def animate_main(source: Path, driving: Path, out: str, out_format: str | None, force: bool, onnx_dir: Path,
                 backend: str, precision: str, providers: tuple[str, ...] | None, device: str | None, relative: bool,
                 adapt_scale: bool,
                 crop: str | None, paste_back: bool, size: int | None, best_frame: bool,
                 reference_frame: int | None, start: float, end: float | None, no_audio: bool, batch: int,
                 side_by_side: bool, fit: str | None, ckpt: Path | None, split: bool | None) -> None:
    """Animate the SOURCE image with the motion of the DRIVING video and write a video (or frames).

    The source is cropped around its face and the driving video around its face's path (--crop); the
    output follows the driving video's timestamps (variable frame rates and a video that starts after its
    audio stay in sync) at its nominal frame rate, with its audio padded or cut to the video.
    Nothing is written until an output is complete: an interrupted run leaves no file.

    \b
    Example:
      fomm-export --ckpt vox-cpk.pth.tar --out exported
      fomm-animate --source face.jpg --driving talk.mp4 --out result.mp4
      fomm-animate ... --backend torch --device cuda --precision fp16   (a GPU without TensorRT)
      fomm-animate --source portrait.png --driving talk.mp4 --out result.webm --paste-back
      fomm-animate --source portraits/ --driving talk.mp4 --out results/ --format gif
    """
    animate(source, driving, out, out_format=out_format, force=force, onnx_dir=onnx_dir, backend=backend,
            precision=precision, providers=providers, device=device, relative=relative, adapt_scale=adapt_scale,
            crop=crop, paste_back=paste_back, size=size, best_frame=best_frame, reference_frame=reference_frame,
            start=start, end=end, no_audio=no_audio, batch=batch, side_by_side=side_by_side, fit=fit, ckpt=ckpt,
            split=split)


def animate(source: Path, driving: Path, out: str, *, out_format: str | None = None, force: bool = False,
            onnx_dir: Path | None = None, backend: str = "onnxruntime", precision: str = "fp32",
            providers: tuple[str, ...] | None = None, device: str | None = None, relative: bool = True,
            adapt_scale: bool = True, crop: str | None = None, paste_back: bool = False, size: int | None = None,
            best_frame: bool = False, reference_frame: int | None = None, start: float = 0.0,
            end: float | None = None, no_audio: bool = False, batch: int = 1, side_by_side: bool = False,
            fit: str | None = None, ckpt: Path | None = None, split: bool | None = None,
            exported=None, animator_factory=None) -> None:
    """fomm-animate's work, callable: what the command does with its options (the same names and meaning).

    ``exported`` (an ``ExportedModel``) and ``animator_factory(relative=, adapt_scale=, fit=)`` let a caller
    that already holds engines (fomm-serve) animate with them instead of opening ``onnx_dir`` afresh.

    Raises:
        InputError (and the other ``FommError`` kinds): contradicting options, unusable inputs or outputs.
    """
    from .errors import BackendUnavailableError
    from .framing import FaceDetector
    from .graphs import load_exported, open_animator
    from .video import open_video

    crop, fit = _crop_and_fit(crop, fit)
    if ckpt is not None and backend != "torch":
        raise InputError("--ckpt is read only by --backend torch (the exported graphs hold the weights); drop it, "
                         "or add --backend torch")
    if providers and backend != "onnxruntime":
        raise InputError(f"--providers chooses ONNX Runtime's providers; --backend {backend} does not use them")
    if (best_frame or reference_frame is not None) and not relative:
        raise InputError("--best-frame / --reference-frame pick the reference pose of relative motion; with "
                         "--absolute there is no reference: drop one of them")
    if best_frame and reference_frame is not None:
        raise InputError("--best-frame and --reference-frame both choose the reference frame: give one")
    if end is not None and end <= start:
        raise InputError(f"--end {end:g} must be after --start {start:g}")
    if paste_back and (crop == "none" or side_by_side or size is not None):
        raise InputError("--paste-back writes the source's own size with the head pasted in: it cannot be combined "
                         "with --crop none, --side-by-side or --size")
    jobs = _plan_outputs(source, driving, out, out_format, force)
    if exported is None:
        exported = load_exported(onnx_dir)
    h, w = exported.frame_size
    side = size or max(h, w)
    for src, _ in jobs:  # fail on a bad image before any heavy work
        _load_portrait(src, paste_back, (h, w))
    cap, info = open_video(driving)
    cap.release()
    detector = None
    if crop in ("auto", "follow"):
        try:
            detector = FaceDetector()
        except BackendUnavailableError as exc:
            click.echo(f"warning: {exc}; using the centre crop", err=True)
    motion = dict(relative=relative, adapt_scale=adapt_scale, fit=fit if crop == "none" else "crop")
    if animator_factory is not None:
        animator = animator_factory(**motion)
    else:
        animator = open_animator(exported, backend, precision, split=split, ckpt=ckpt, providers=providers,
                                 device=device, **motion)
    clip = _DrivingClip(driving, info, start, end, crop, fit, (h, w), detector, batch)
    reference_kp = None
    for src, target in jobs:
        portrait = _load_portrait(src, paste_back, (h, w))
        box = _source_box(portrait, src, crop, detector)
        animator.set_source(portrait if box is None else _cut(portrait, box))
        if best_frame:
            clip.use_best_frame(animator)
        elif reference_frame is not None:
            if reference_kp is None:  # the same driving frame for every portrait: read it once
                reference_kp = clip.reference_keypoints(animator, reference_frame)
            animator.set_reference_keypoints(reference_kp)
        _write_one(animator, clip, portrait, box, target, paste_back=paste_back, side=side,
                   side_by_side=side_by_side, audio=not no_audio, backend=backend, precision=precision)


def _crop_and_fit(crop: str | None, fit: str | None) -> tuple[str, str]:
    """The framing from --crop and --fit: --fit pad/stretch alone means --crop none (today's behaviour)."""
    if crop is None:
        crop = "none" if fit in ("pad", "stretch") else "centre" if fit == "crop" else "auto"
    if crop != "none" and fit in ("pad", "stretch"):
        raise InputError(f"--fit {fit} makes the whole frame square without cropping; --crop {crop} crops: give "
                         "--crop none with it, or drop --fit")
    if crop == "none" and fit is None:
        fit = "pad"
    return crop, fit or "crop"


def _plan_outputs(source: Path, driving: Path, out: str, out_format: str | None, force: bool) -> list[tuple[Path, str]]:
    """(portrait, output path) pairs, every output checked before any work. A frame folder's path ends in /."""
    from .fileio import check_output_file
    from .preprocess import IMAGE_SUFFIXES
    from .video import container_for

    if source.is_dir():
        portraits = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and not p.name.startswith("."))
        if not portraits:
            raise InputError(f"--source folder {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {out} is a file; with a --source folder, --out is the folder the outputs go into")
        if Path(out).suffix.lower() in (".mp4", ".webm", ".gif"):
            raise InputError(f"--out {out} names a file; with a --source folder give a folder (and --format)")
        if folder.resolve() == source.resolve():
            raise InputError("--out is the --source folder: choose another folder for the outputs")
        suffix = OUT_FORMATS[out_format or "mp4"]
        jobs = [(p, str(folder / p.stem) + suffix) for p in portraits]
        stems = [p.stem for p in portraits]
        if len(set(stems)) != len(stems):
            raise InputError(f"--source folder {source} has two portraits with one name and different suffixes "
                             "(their outputs would collide): rename one")
    else:
        if out_format is not None:
            raise InputError("--format is for a --source folder; for one portrait, --out's name gives the format")
        jobs = [(source, out)]
    for _, target in jobs:
        kind = container_for(target)
        if kind is None:
            raise InputError(f"--out must end in .mp4, .webm or .gif, or be a folder for PNG frames (end it with /), "
                             f"got {Path(target).name}")
        if kind == "frames":
            path = Path(target)
            if path.exists() and any(path.iterdir()):
                raise InputError(f"--out {target} is a folder that is not empty; PNG frames go into a new or empty "
                                 "folder")
            for name, other in (("--source", source), ("--driving", driving)):
                if path.resolve() == Path(other).resolve():
                    raise InputError(f"--out {target} is the {name} input: choose another output name")
        else:
            check_output_file(target, inputs={"--source": source, "--driving": driving}, force=force,
                              suffixes=(".mp4", ".webm", ".gif"))
    return jobs


def _load_portrait(path: Path, full: bool, frame_size: tuple[int, int]) -> np.ndarray:
    """The portrait as RGB uint8: at full resolution for --paste-back, else at least twice the model's size
    (big JPEGs are decoded smaller)."""
    from .preprocess import load_source, to_uint8

    return to_uint8(load_source(path, max_side=None if full else 2 * max(frame_size)))


def _cut(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    from .framing import cut

    return cut(image, box)


def _source_box(portrait: np.ndarray, path: Path, crop: str, detector) -> tuple[int, int, int] | None:
    """The source's crop box (x, y, side); None with --crop none. Says which, on stderr."""
    from .framing import centre_box, source_box

    ph, pw = portrait.shape[:2]
    if crop == "none":
        return None
    face = detector.detect(portrait) if detector is not None else None
    if face is None:
        if detector is not None:
            click.echo(f"warning: no face found in {path}; using the centre crop (FOMM animates a face centred "
                       "with some margin: crop the portrait so, or expect the background to move)", err=True)
        box = centre_box(pw, ph)
    else:
        box = source_box(face, (pw, ph))
    click.echo(f"source crop {path.name}: x={box[0]} y={box[1]} side={box[2]} "
               f"({'face' if face is not None else 'centre'})", err=True)
    return box


class _DrivingClip:
    """The driving frames between --start and --end, cut by the framing, as model frames in batches.

    The face detection pass (for --crop auto/follow) runs once, on every ``stride``-th frame (about 10 a
    second; the frames between take the interpolation), before the first batch.
    """

    def __init__(self, path: Path, info, start: float, end: float | None, crop: str, fit: str,
                 frame_size: tuple[int, int], detector, batch: int) -> None:
        self.path, self.info, self.start, self.end = path, info, start, end
        self.crop, self.fit, self.frame_size, self.batch = crop, fit, frame_size, batch
        self.boxes: list[tuple[int, int, int]] | None = None  # per frame (follow) ...
        self.box: tuple[int, int, int] | None = None  # ... or one for the clip
        if crop in ("auto", "follow", "centre"):
            self.box = (centre_box_of(info.width, info.height))
        if detector is not None:
            self._detect(detector)
        if self.box is not None:
            x, y, s = self.box
            click.echo(f"driving crop: x={x} y={y} side={s} ({self.how})", err=True)

    def frames(self):
        """(index, RGB uint8 frame, time in seconds from the output's start) for the frames in the window."""
        from .errors import VideoError
        from .video import iter_timed_frames

        index = 0
        for frame, t in iter_timed_frames(self.path):
            rel = t - self.info.video_start
            if rel < self.start - 1e-6:
                continue
            if self.end is not None and rel >= self.end - 1e-6:
                break
            yield index, frame, rel - self.start
            index += 1
        if index == 0:
            raise VideoError(f"{self.path} has no frames between --start {self.start:g} and --end "
                             f"{self.end if self.end is not None else 'its end'}")

    def _detect(self, detector) -> None:
        from .framing import ClipTracker, clip_box, follow_boxes

        stride = max(1, int(round(self.info.fps / 10)))
        tracker = ClipTracker(detector)
        faces, looks, i = [], 0, 0
        for i, frame, _ in self.frames():
            faces.append(tracker.update(frame) if i % stride == 0 else None)
            looks += i % stride == 0
        if i % stride:  # the last frame too, so the interpolation does not hold an old position
            faces[-1] = tracker.update(frame)
            looks += 1
        found = sum(f is not None for f in faces)
        size = (self.info.width, self.info.height)
        if not found:
            click.echo(f"warning: no face found in {self.path}; using the centre crop", err=True)
            self.how = "centre: no face"
            return
        if self.crop == "follow":
            self.boxes = follow_boxes(faces, size)
            self.box = self.boxes[0]
            self.how = f"first box; it follows the face: found in {found} of {looks} frames looked at"
        else:
            self.box = clip_box(faces, size)
            self.how = f"around the face's positions over the clip: found in {found} of {looks} frames looked at"

    how = "centre"

    def box_at(self, index: int) -> tuple[int, int, int] | None:
        return self.boxes[min(index, len(self.boxes) - 1)] if self.boxes is not None else self.box

    def model_frame(self, index: int, frame: np.ndarray) -> np.ndarray:
        from .framing import cut
        from .preprocess import prepare_frame

        box = self.box_at(index)
        if box is None:
            return prepare_frame(frame, self.frame_size, fit=self.fit)
        return prepare_frame(cut(frame, box), self.frame_size, fit="crop")

    def batches(self):
        """(model frames (N, H, W, 3) float32, their times) ``batch`` at a time."""
        chunk, times = [], []
        for i, frame, t in self.frames():
            chunk.append(self.model_frame(i, frame))
            times.append(t)
            if len(chunk) == self.batch:
                yield np.stack(chunk), times
                chunk, times = [], []
        if chunk:
            yield np.stack(chunk), times

    @property
    def audio_start(self) -> float:
        return self.info.video_start + self.start

    def use_best_frame(self, animator) -> None:
        """Set the driving frame closest in pose to the animator's source as its reference."""
        from tqdm import tqdm

        from .animator import find_best_frame
        from .keypoints import KP

        values = []
        with tqdm(total=self.info.frame_count or None, desc="finding best frame", unit="frame", disable=None) as bar:
            for frames, _ in self.batches():
                values.append(animator.keypoints(frames))
                bar.update(len(frames))
        kp_all = KP(np.concatenate([v.value for v in values]),
                    None if values[0].jacobian is None else np.concatenate([v.jacobian for v in values]))
        best = find_best_frame(animator.source_keypoints, kp_all.value)
        animator.set_reference_keypoints(KP(kp_all.value[best:best + 1],
                                            None if kp_all.jacobian is None else kp_all.jacobian[best:best + 1]))
        click.echo(f"best frame: {best} (used as the reference pose)", err=True)

    def reference_keypoints(self, animator, n: int):
        """The keypoints of driving frame ``n`` (counted from --start)."""
        count = 0
        for i, frame, _ in self.frames():
            if i == n:
                click.echo(f"reference frame: {n}", err=True)
                return animator.keypoints(self.model_frame(i, frame)[None])
            count = i + 1
        raise InputError(f"--reference-frame {n}: the driving video has only {count} frames "
                         f"{'after --start' if self.start else ''}".rstrip())


def centre_box_of(width: int, height: int) -> tuple[int, int, int]:
    from .framing import centre_box

    return centre_box(width, height)


def _write_one(animator, clip: _DrivingClip, portrait: np.ndarray, box, target: str, *, paste_back: bool,
               side: int, side_by_side: bool, audio: bool, backend: str, precision: str) -> None:
    """Animate the whole clip into ``target`` and say what was written."""
    import cv2
    from tqdm import tqdm

    from .framing import feather_mask
    from .framing import paste_back as paste
    from .preprocess import to_uint8
    from .video import VideoWriter, container_for

    kind = container_for(target)
    h, w = clip.frame_size
    if paste_back:
        ph, pw = portrait.shape[:2]
        if kind in ("mp4", "webm"):
            ph, pw = ph - ph % 2, pw - pw % 2  # yuv420p: an odd last row or column is dropped
        canvas = np.ascontiguousarray(portrait[:ph, :pw])
        mask = feather_mask(box[2])
        size = (pw, ph)
    else:
        panel = side
        size = (3 * panel if side_by_side else panel, panel)
        if kind in ("mp4", "webm") and panel % 2:
            raise InputError(f"--size {panel}: MP4 and WebM need an even size")

    def scaled(img: np.ndarray) -> np.ndarray:
        if img.shape[:2] == (side, side):
            return img
        return cv2.resize(img, (side, side), interpolation=cv2.INTER_LANCZOS4)

    source_u8 = animator.source_uint8()
    start = time.perf_counter()
    with VideoWriter(target, clip.info.fps, size, audio_from=clip.path if audio else None,
                     audio_start=clip.audio_start) as writer, \
            tqdm(total=clip.info.frame_count or None, desc="animating", unit="frame", disable=None) as bar:
        for frames, times in clip.batches():
            for frame, t, result in zip(frames, times, animator.animate_prepared(frames)):
                if paste_back:
                    result = paste(canvas, result, box, mask=mask)
                elif side_by_side:
                    result = np.concatenate([scaled(source_u8), scaled(to_uint8(frame)), scaled(result)], axis=1)
                else:
                    result = scaled(result)
                writer.write(result, t)
            bar.update(len(frames))
    seconds = time.perf_counter() - start
    sound = ("with audio" if writer.with_audio else "no audio" if not audio or kind in ("gif", "frames")
             else "no audio in the driving video")
    graphs = "split graphs" if animator.generator_frame is not None else "reference generator"
    click.echo(f"wrote {target}: {writer.frames} frames ({writer.duration:.2f} s at {clip.info.fps:.2f} fps) from "
               f"{writer.received} driving frames, {size[0]}x{size[1]}, {sound}; {writer.received / seconds:.1f} "
               f"frames/s with {backend} {precision} ({graphs})")

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
