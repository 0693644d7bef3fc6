"""``FaceFramer``: a steady square crop around the face in each camera frame, which keys can zoom and move."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..core.errors import BackendUnavailableError, InputError
from ..media.framing import ClipTracker, FaceDetector, centre_box, cut


def _fit_box(cx: float, cy: float, side: float, frame_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A float centre and side -> the integer box (x, y, side); the side is kept between 8 px (never an empty
    crop) and twice the frame's longer side."""
    h, w = frame_shape[:2]
    side = int(round(min(max(side, 8), 2 * max(h, w))))
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


class CropAdjust:
    """The zoom and move keys' change to the crop box, applied on top of the automatic one (which follows
    the face, or is the centre square), so that both compose: the box keeps following the face, zoomed and
    shifted as asked.

    ``zoom`` > 1 shows less around the face (the box side is divided by it); ``dx``, ``dy`` move the box's
    centre right / down, in units of the automatic box's side (so the shift follows the face's size).
    The main thread changes it (keys) while the framing thread applies it: every access holds a lock.
    """

    ZOOM_STEP = 1.1  # one zoom key press
    MOVE_STEP = 0.05  # one move key press, of the box side
    MAX_ZOOM = 4.0  # zoom stays within [1 / MAX_ZOOM, MAX_ZOOM]
    MAX_MOVE = 1.0  # the centre stays within one box side of the automatic one

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.zoom, self.dx, self.dy = 1.0, 0.0, 0.0

    def zoom_by(self, steps: int) -> None:
        """Zoom in (``steps`` > 0) or out (< 0) by ``ZOOM_STEP`` per step."""
        with self._lock:
            self.zoom = float(np.clip(self.zoom * self.ZOOM_STEP ** steps, 1 / self.MAX_ZOOM, self.MAX_ZOOM))

    def move(self, right: int, down: int) -> None:
        """Move the box ``right`` steps right (negative: left) and ``down`` steps down (negative: up)."""
        with self._lock:
            self.dx = float(np.clip(self.dx + right * self.MOVE_STEP, -self.MAX_MOVE, self.MAX_MOVE))
            self.dy = float(np.clip(self.dy + down * self.MOVE_STEP, -self.MAX_MOVE, self.MAX_MOVE))

    def reset(self) -> None:
        """Back to the automatic box."""
        with self._lock:
            self.zoom, self.dx, self.dy = 1.0, 0.0, 0.0

    @property
    def is_identity(self) -> bool:
        with self._lock:
            return self.zoom == 1.0 and self.dx == 0.0 and self.dy == 0.0

    def describe(self) -> str:
        """What it does, for the overlay and the log: ``zoom 1.21x, moved +0.10 right, -0.05 down``."""
        with self._lock:
            return f"zoom {self.zoom:.2f}x, moved {self.dx:+.2f} right, {self.dy:+.2f} down (of the box)"

    def apply(self, box: tuple[int, int, int], frame_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The automatic box (x, y, side) in a frame of ``frame_shape``, zoomed and moved."""
        with self._lock:
            zoom, dx, dy = self.zoom, self.dx, self.dy
        if zoom == 1.0 and dx == 0.0 and dy == 0.0:
            return box
        x, y, side = box
        return _fit_box(x + side / 2 + dx * side, y + side / 2 + dy * side, side / zoom, frame_shape)


class FaceFramer:
    """Square crop around the face: ``runtime.framing.FaceDetector`` (the detector fomm-animate uses: Haar
    frontal, profile and rotated tries; without histogram equalisation, as live mode always ran), with
    ``ClipTracker`` following the face from frame to frame; margin, temporal smoothing, and the keys' zoom
    and moves (``adjust``, a :class:`CropAdjust`).

    Frames in are camera frames, (H, W, 3) uint8 BGR. Boxes are (x, y, side) in their pixels and may
    reach outside the frame (``cut`` repeats the border there). Until a face has been seen, and with
    ``crop=False``, the automatic box is the centre square.

    Args:
        crop: False uses the centre square of the frame.
        scale: crop side / detected face side (the detector's square covers brow to mouth; 2.0 frames the
            head like VoxCeleb).
        raise_by: move the crop up by this fraction of the face size (room for hair, less neck).
        smoothing: 0 follows detections immediately, towards 1 moves the box ever more slowly.
        detect_width: frames wider than this are shrunk to it for detection (speed).

    Raises:
        InputError: ``scale`` is not positive.
        BackendUnavailableError: OpenCV's face detector is not installed (opencv-python 5 removed it).
    """

    def __init__(self, *, crop: bool = True, scale: float = 2.0, raise_by: float = 0.12, smoothing: float = 0.6,
                 detect_width: int = 320) -> None:
        if not scale > 0:  # also NaN
            raise InputError(f"--crop-scale must be greater than 0 (the crop side over the face side), got {scale}")
        self.crop_enabled = crop
        self.scale, self.raise_by, self.smoothing = scale, raise_by, smoothing
        self.adjust = CropAdjust()
        self._box: np.ndarray | None = None  # cx, cy, side (float)
        self.stable_frames = 0  # consecutive frames with a steady box (every frame with crop=False)
        self._tracker = None
        if crop:
            try:
                self._tracker = ClipTracker(FaceDetector(detect_width=detect_width, equalize=False))
            except BackendUnavailableError as exc:
                raise BackendUnavailableError(f"{exc}; live mode: run with --no-crop") from None

    def reset(self) -> None:
        """Forget the face: the next detection places the box afresh (the keys' zoom and moves stay)."""
        self._box = None
        self.stable_frames = 0
        if self._tracker is not None:
            self._tracker.last, self._tracker.misses = None, 0

    def detect(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """The face in a BGR uint8 frame as (cx, cy, side) in frame pixels, or None; looked for near the last
        one first (``ClipTracker``)."""
        return self._tracker.update(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))

    def box(self, frame: np.ndarray) -> tuple[tuple[int, int, int], bool]:
        """The crop box (x, y, side) for this frame (smoothed, then zoomed and moved by ``adjust``), and
        whether a face was found in it."""
        h, w = frame.shape[:2]
        if not self.crop_enabled:
            self.stable_frames += 1
            return self.adjust.apply(self._centre(w, h), frame.shape), True
        found = self.detect(frame)
        if found is not None:
            cx, cy, side = found
            target = np.array([cx, cy - self.raise_by * side, side * self.scale])
            jumped = self._box is None or abs(target[2] - self._box[2]) > 0.25 * self._box[2]
            if jumped:
                self._box = target  # first detection or a jump: no slow glide across the frame
                self.stable_frames = 1
            else:
                self._box = self.smoothing * self._box + (1 - self.smoothing) * target
                self.stable_frames += 1
        else:
            self.stable_frames = 0
        if self._box is None:  # never seen a face: centre square
            return self.adjust.apply(self._centre(w, h), frame.shape), False
        return self.adjust.apply(_fit_box(*self._box, frame.shape), frame.shape), found is not None

    @staticmethod
    def _centre(w: int, h: int) -> tuple[int, int, int]:
        return centre_box(w, h)

    @staticmethod
    def cut(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
        """The square crop (side x side, same dtype and channel order as ``frame``); parts outside the frame
        repeat its border pixels (``runtime.framing.cut``, shared with fomm-animate)."""
        return cut(frame, box)


def frame_for_model(framer: FaceFramer, frame: np.ndarray, prepare) -> tuple[tuple[int, int, int], bool, np.ndarray]:
    """One camera frame (BGR uint8) through the framing stage: its crop box, whether a face was found, and
    the crop as a model frame (``prepare``: an animator's ``prepare``, RGB in). fomm-live and fomm-serve."""
    box, found = framer.box(frame)
    crop = cv2.cvtColor(framer.cut(frame, box), cv2.COLOR_BGR2RGB)
    return box, found, prepare(crop)


# Steady face frames in a row before one becomes the reference pose (fomm-live and fomm-serve).
CALIBRATE_FRAMES = 3


def ready_to_calibrate(found: bool, stable_frames: int, needed: int = CALIBRATE_FRAMES) -> bool:
    """Whether a frame may become the reference pose: a face in it, steady for ``needed`` frames in a row."""
    return found and stable_frames >= needed
