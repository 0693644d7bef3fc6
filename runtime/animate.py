"""What ``fomm-animate`` does, as a function: a portrait (or a folder of them) animated by a driving video into
video files or PNG frames. No click here: the command line (``animate_cli.py``) and other front-ends call
:func:`animate` with :class:`AnimateOptions` and get an :class:`Output` per file written.

Messages meant for the user (the crop boxes, warnings, the chosen reference frame) go to ``log``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .animator import find_best_frame
from .core.errors import BackendUnavailableError, InputError, VideoError
from .core.fileio import check_output_file, write_image
from .core.keypoints import KP
from .core.names import check_max_frames
from .graphs import load_exported, open_animator
from .media.framing import (ClipTracker, FaceDetector, centre_box, clip_box, cut, feather_mask, follow_boxes,
                            frame_portrait, paste_back as paste)
from .media.preprocess import list_portraits, load_source, prepare_frame, to_uint8
from .media.video import CONTAINER_SUFFIXES, VideoWriter, container_for, iter_timed_frames, open_video

# --format's names -> the suffix each output gets with a --source folder (a frame folder's path ends in /).
# --format NAME -> what its output path ends with: the video containers' suffixes (video.py), "/" for frames.
OUT_FORMATS = {**{kind: suffix for suffix, kind in CONTAINER_SUFFIXES.items()}, "frames": "/"}


@dataclass(frozen=True)
class AnimateOptions:
    """Every choice of ``fomm-animate`` but its three paths; the defaults are the command's.

    ``crop`` / ``fit`` None: as the command's --crop / --fit left out (auto framing; see ``crop_and_fit``).
    """

    onnx_dir: Path = Path("exported")
    backend: str = "onnxruntime"
    precision: str = "fp32"
    providers: tuple[str, ...] | None = None
    device: str | None = None
    relative: bool = True
    adapt_scale: bool = True
    crop: str | None = None
    fit: str | None = None
    paste_back: bool = False
    size: int | None = None
    best_frame: bool = False
    reference_frame: int | None = None
    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None  # driving frames used, at most (from ``start`` on)
    audio: bool = True
    batch: int = 1
    side_by_side: bool = False
    ckpt: Path | None = None
    split: bool | None = None
    frame_step: bool | None = None
    compile: bool | None = None  # torch backend: torch.compile (None: on CUDA)
    out_format: str | None = None
    force: bool = False
    still: Path | None = None  # also one PNG frame of the output, from the middle of the clip


@dataclass(frozen=True)
class Output:
    """One file (or frame folder) :func:`animate` wrote, with what the command prints about it."""

    path: str
    frames: int  # written (a variable frame rate is resampled to ``fps``)
    duration: float  # seconds
    fps: float
    driving_frames: int  # read from the driving video
    size: tuple[int, int]  # (width, height)
    sound: str  # "with audio", "no audio" or "no audio in the driving video"
    frames_per_second: float  # driving frames animated per second of wall time
    backend: str
    precision: str
    graphs: str  # the graphs that animated each frame (Animator.graphs)
    still: str | None = None  # the PNG of one frame (--still)
    still_frame: int | None = None  # which: the index of its driving frame, from --start on

    def summary(self) -> str:
        return (f"wrote {self.path}: {self.frames} frames ({self.duration:.2f} s at {self.fps:.2f} fps) from "
                f"{self.driving_frames} driving frames, {self.size[0]}x{self.size[1]}, {self.sound}; "
                f"{self.frames_per_second:.1f} frames/s with {self.backend} {self.precision} ({self.graphs})"
                + (f"; frame {self.still_frame} as {self.still}" if self.still else ""))


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def animate(source: str | Path, driving: str | Path, out: str | Path, options: AnimateOptions = AnimateOptions(), *,
            log: Callable[[str], None] = _to_stderr,
            on_output: Callable[[Output], None] | None = None, exported=None,
            animator_factory: Callable[..., object] | None = None) -> list[Output]:
    """Animate ``source`` (an image, a video's first frame, or a folder of portraits) with the motion of
    ``driving`` into ``out`` (.mp4, .webm, .gif, or a folder of PNG frames: a path ending in /; with a
    folder of portraits, the folder the outputs go into, in ``options.out_format``).

    Every option and output path is checked, and every portrait read, before any heavy work; each output
    appears only once complete. ``on_output`` is called as each one is written; all are returned.

    ``exported`` (a ``graphs.ExportedModel``) and ``animator_factory(relative=, adapt_scale=, fit=)`` let a
    caller that already holds engines (fomm-serve) animate with them instead of opening ``options.onnx_dir``.

    Raises:
        InputError: an option, input or output path that cannot be used (the message says why).
        ExportFolderError, BackendUnavailableError, CheckpointError: as ``graphs.open_animator`` raises them.
    """
    o = options
    source, driving, out = Path(source), Path(driving), str(out)
    crop, fit = crop_and_fit(o.crop, o.fit)
    if o.ckpt is not None and o.backend != "torch":
        raise InputError("--ckpt is read only by --backend torch (the exported graphs hold the weights); drop it, "
                         "or add --backend torch")
    if o.providers and o.backend != "onnxruntime":
        raise InputError(f"--providers chooses ONNX Runtime's providers; --backend {o.backend} does not use them")
    if (o.best_frame or o.reference_frame is not None) and not o.relative:
        raise InputError("--best-frame / --reference-frame pick the reference pose of relative motion; with "
                         "--absolute there is no reference: drop one of them")
    if o.best_frame and o.reference_frame is not None:
        raise InputError("--best-frame and --reference-frame both choose the reference frame: give one")
    check_max_frames(o.max_frames)
    for name, value in (("--start", o.start), ("--end", o.end)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} {value:g} is not a time in seconds; give a number of 0 or more, such as 1.5")
    if o.end is not None and o.end <= o.start:
        raise InputError(f"--end {o.end:g} must be after --start {o.start:g}")
    if o.paste_back and (crop == "none" or o.side_by_side or o.size is not None):
        raise InputError("--paste-back writes the source's own size with the head pasted in: it cannot be combined "
                         "with --crop none, --side-by-side or --size")
    jobs = _plan_outputs(source, driving, out, o.out_format, o.force)
    if o.still is not None:
        _check_still(o.still, source, driving, out, o.force)
    if exported is None:
        exported = load_exported(o.onnx_dir)
    h, w = exported.frame_size
    side = o.size or max(h, w)
    for src, _ in jobs:  # fail on a bad image before any heavy work
        _load_portrait(src, o.paste_back, (h, w))
    cap, info = open_video(driving)
    cap.release()
    detector = None
    if crop in ("auto", "follow"):
        try:
            detector = FaceDetector()
        except BackendUnavailableError as exc:
            log(f"warning: {exc}; using the centre crop")
    motion = dict(relative=o.relative, adapt_scale=o.adapt_scale, fit=fit if crop == "none" else "crop")
    if animator_factory is not None:
        animator = animator_factory(**motion)
    else:
        animator = open_animator(exported, o.backend, o.precision, split=o.split, frame_step=o.frame_step,
                                 ckpt=o.ckpt, providers=o.providers, device=o.device, compile=o.compile,
                                 on_compile=log, **motion)
    clip = _DrivingClip(driving, info, o.start, o.end, o.max_frames, crop, fit, (h, w), detector, o.batch, log)
    reference_kp = None
    written = []
    for src, target in jobs:
        portrait = _load_portrait(src, o.paste_back, (h, w))
        # the detector failed to load: already said once above, so the portrait takes the centre square quietly
        framed = frame_portrait(portrait, "centre" if crop != "none" and detector is None else crop, source=src,
                                detector=detector, fit=fit)
        log(framed.message)
        box = framed.box
        animator.set_source(framed.image)
        if o.best_frame:
            clip.use_best_frame(animator)
        elif o.reference_frame is not None:
            if reference_kp is None:  # the same driving frame for every portrait: read it once
                reference_kp = clip.reference_keypoints(animator, o.reference_frame)
            animator.set_reference_keypoints(reference_kp)
        result = _write_one(animator, clip, portrait, box, target, paste_back=o.paste_back, side=side,
                            side_by_side=o.side_by_side, audio=o.audio, backend=o.backend, precision=o.precision,
                            still=o.still)
        written.append(result)
        if on_output is not None:
            on_output(result)
    return written


def crop_and_fit(crop: str | None, fit: str | None) -> tuple[str, str]:
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
    if source.is_dir():
        portraits = list_portraits(source)
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {out} is a file; with a --source folder, --out is the folder the outputs go into")
        if Path(out).suffix.lower() in CONTAINER_SUFFIXES:
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
                              suffixes=tuple(CONTAINER_SUFFIXES))
    return jobs


def _check_still(still: Path, source: Path, driving: Path, out: str, force: bool) -> None:
    """--still is one PNG of one output, never an input or the output itself."""
    if source.is_dir():
        raise InputError("--still writes one frame of one output; with a --source folder there are several: "
                         "animate the portrait you want alone")
    check_output_file(still, inputs={"--source": source, "--driving": driving, "--out": Path(out)}, force=force,
                      option="--still", suffixes=(".png",))


def _load_portrait(path: Path, full: bool, frame_size: tuple[int, int]) -> np.ndarray:
    """The portrait as RGB uint8: at full resolution for --paste-back, else at least twice the model's size
    (big JPEGs are decoded smaller)."""
    return to_uint8(load_source(path, max_side=None if full else 2 * max(frame_size)))


class _DrivingClip:
    """The driving frames between --start and --end (--max-frames of them at most), cut by the framing, as
    model frames in batches.

    The face detection pass (for --crop auto/follow) runs once, on every ``stride``-th frame (about 10 a
    second; the frames between take the interpolation), before the first batch.
    """

    def __init__(self, path: Path, info, start: float, end: float | None, max_frames: int | None, crop: str,
                 fit: str, frame_size: tuple[int, int], detector, batch: int, log: Callable[[str], None]) -> None:
        self.path, self.info, self.start, self.end, self.log = path, info, start, end, log
        self.max_frames = max_frames
        self.crop, self.fit, self.frame_size, self.batch = crop, fit, frame_size, batch
        self.boxes: list[tuple[int, int, int]] | None = None  # per frame (follow) ...
        self.box: tuple[int, int, int] | None = None  # ... or one for the clip
        if crop in ("auto", "follow", "centre"):
            self.box = (centre_box_of(info.width, info.height))
        if detector is not None:
            self._detect(detector)
        if self.box is not None:
            x, y, s = self.box
            log(f"driving crop: x={x} y={y} side={s} ({self.how})")

    def frames(self):
        """(index, RGB uint8 frame, time in seconds from the output's start) for the frames in the window."""
        index = 0
        for frame, t in iter_timed_frames(self.path):
            rel = t - self.info.video_start
            if rel < self.start - 1e-6:
                continue
            if self.end is not None and rel >= self.end - 1e-6:
                break
            if index == self.max_frames:
                break
            yield index, frame, rel - self.start
            index += 1
        if index == 0:
            raise VideoError(f"{self.path} has no frames between --start {self.start:g} and --end "
                             f"{self.end if self.end is not None else 'its end'}")

    def _detect(self, detector) -> None:
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
            self.log(f"warning: no face found in {self.path}; using the centre crop")
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

    def middle_index(self) -> int:
        """The index of the driving frame in the middle of the window, from what the container says (its
        frame count, else its duration): where --still takes its frame."""
        fps = self.info.fps or 25.0
        total = self.info.frame_count or int(round(self.info.duration * fps))
        n = total - int(round(self.start * fps))
        if self.end is not None:
            n = min(n, int(round((self.end - self.start) * fps)))
        if self.max_frames is not None:
            n = min(n, self.max_frames)
        return max(0, n) // 2

    @property
    def audio_start(self) -> float:
        return self.info.video_start + self.start

    def use_best_frame(self, animator) -> None:
        """Set the driving frame closest in pose to the animator's source as its reference."""
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
        self.log(f"best frame: {best} (used as the reference pose)")

    def reference_keypoints(self, animator, n: int):
        """The keypoints of driving frame ``n`` (counted from --start)."""
        count = 0
        for i, frame, _ in self.frames():
            if i == n:
                self.log(f"reference frame: {n}")
                return animator.keypoints(self.model_frame(i, frame)[None])
            count = i + 1
        if self.max_frames is not None and count >= self.max_frames:
            raise InputError(f"--reference-frame {n}: --max-frames {self.max_frames} uses only frames 0 to "
                             f"{self.max_frames - 1}")
        raise InputError(f"--reference-frame {n}: the driving video has only {count} frames "
                         f"{'after --start' if self.start else ''}".rstrip())


def centre_box_of(width: int, height: int) -> tuple[int, int, int]:
    return centre_box(width, height)


def _write_one(animator, clip: _DrivingClip, portrait: np.ndarray, box, target: str, *, paste_back: bool,
               side: int, side_by_side: bool, audio: bool, backend: str, precision: str,
               still: Path | None = None) -> Output:
    """Animate the whole clip into ``target`` (and its middle frame into ``still``, a PNG, once the output is
    complete); what was written."""
    kind = container_for(target)
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

    still_index = clip.middle_index() if still is not None else -1
    still_frame, still_at, index = None, None, 0

    source_panel = scaled(animator.source_uint8()) if side_by_side else None  # once, not per frame
    start = time.perf_counter()
    with VideoWriter(target, clip.info.fps, size, audio_from=clip.path if audio else None,
                     audio_start=clip.audio_start) as writer, \
            tqdm(total=clip.info.frame_count or None, desc="animating", unit="frame", disable=None) as bar:
        for frames, times in clip.batches():
            for frame, t, result in zip(frames, times, animator.animate_prepared(frames)):
                if paste_back:
                    result = paste(canvas, result, box, mask=mask)
                elif side_by_side:
                    result = np.concatenate([source_panel, scaled(to_uint8(frame)), scaled(result)], axis=1)
                else:
                    result = scaled(result)
                writer.write(result, t)
                if index <= still_index:  # the middle frame, or the last one of a clip shorter than announced
                    still_frame, still_at = result.copy(), index
                index += 1
            bar.update(len(frames))
    if still_frame is not None:
        write_image(still, cv2.cvtColor(still_frame, cv2.COLOR_RGB2BGR))
    seconds = time.perf_counter() - start
    sound = ("with audio" if writer.with_audio else "no audio" if not audio or kind in ("gif", "frames")
             else "no audio in the driving video")
    graphs = animator.graphs
    return Output(path=target, frames=writer.frames, duration=writer.duration, fps=clip.info.fps,
                  driving_frames=writer.received, size=size, sound=sound, frames_per_second=writer.received / seconds,
                  backend=backend, precision=precision, graphs=graphs,
                  still=None if still is None else str(still), still_frame=still_at)
