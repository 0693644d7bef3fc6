"""``FaceFramer``: a steady square crop around the face in each camera frame."""

from __future__ import annotations

import os

import numpy as np

from ..errors import BackendUnavailableError, InputError


class FaceFramer:
    """Square crop around the face: Haar cascade (ships with opencv-python < 5), margin, temporal smoothing.

    Frames in are camera frames, (H, W, 3) uint8 BGR. Boxes are (x, y, side) in their pixels and may
    reach outside the frame (``cut`` repeats the border there). Until a face has been seen, and with
    ``crop=False``, the box is the centre square.

    Args:
        crop: False uses the centre square of the frame.
        scale: crop side / detected face side (Haar boxes cover brow to mouth; 2.0 frames the head like
            VoxCeleb).
        raise_by: move the crop up by this fraction of the face size (room for hair, less neck).
        smoothing: 0 follows detections immediately, towards 1 moves the box ever more slowly.
        detect_width: frames wider than this are shrunk to it for detection (speed).

    Raises:
        InputError: ``scale`` is not positive.
        BackendUnavailableError: OpenCV's face detector is not installed (opencv-python 5 removed it).
    """

    def __init__(self, *, crop: bool = True, scale: float = 2.0, raise_by: float = 0.12, smoothing: float = 0.6,
                 detect_width: int = 320) -> None:
        import cv2

        if not scale > 0:  # also NaN
            raise InputError(f"--crop-scale must be greater than 0 (the crop side over the face side), got {scale}")
        self.crop_enabled = crop
        self.scale, self.raise_by, self.smoothing = scale, raise_by, smoothing
        self.detect_width = detect_width
        self._box: np.ndarray | None = None  # cx, cy, side (float)
        self.stable_frames = 0  # consecutive frames with a steady box (every frame with crop=False)
        if crop:
            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise BackendUnavailableError(f"cannot load OpenCV's face detector ({path}); install "
                                              "opencv-python<5 (5.0 removed the Haar cascades) or run with --no-crop")

    def reset(self) -> None:
        """Forget the face: the next detection places the box afresh."""
        self._box = None
        self.stable_frames = 0

    def detect(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """Largest face in a BGR uint8 frame as (cx, cy, side) in frame pixels, or None."""
        import cv2

        h, w = frame.shape[:2]
        f = min(1.0, self.detect_width / w)
        grey = cv2.cvtColor(cv2.resize(frame, (int(w * f), int(h * f))) if f < 1 else frame, cv2.COLOR_BGR2GRAY)
        min_side = max(20, int(0.08 * min(grey.shape)))
        faces = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, bw, bh = max(faces, key=lambda r: r[2] * r[3])
        side = max(bw, bh) / f
        return (x + bw / 2) / f, (y + bh / 2) / f, side

    def box(self, frame: np.ndarray) -> tuple[tuple[int, int, int], bool]:
        """The smoothed square crop box (x, y, side) for this frame, and whether a face was found in it."""
        h, w = frame.shape[:2]
        if not self.crop_enabled:
            s = min(h, w)
            self.stable_frames += 1
            return ((w - s) // 2, (h - s) // 2, s), True
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
            s = min(h, w)
            return ((w - s) // 2, (h - s) // 2, s), False
        cx, cy, side = self._box
        side = int(round(min(max(side, 8), 2 * max(h, w))))  # never an empty crop
        return (int(round(cx - side / 2)), int(round(cy - side / 2)), side), found is not None

    @staticmethod
    def cut(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
        """The square crop (side x side, same dtype and channel order as ``frame``); parts outside the frame
        repeat its border pixels (``runtime.framing.cut``, shared with fomm-animate)."""
        from ..framing import cut

        return cut(frame, box)


def frame_for_model(framer: FaceFramer, frame: np.ndarray, prepare) -> tuple[tuple[int, int, int], bool, np.ndarray]:
    """One camera frame (BGR uint8) through the framing stage: its crop box, whether a face was found, and
    the crop as a model frame (``prepare``: an animator's ``prepare``, RGB in). fomm-live and fomm-serve."""
    import cv2

    box, found = framer.box(frame)
    crop = cv2.cvtColor(framer.cut(frame, box), cv2.COLOR_BGR2RGB)
    return box, found, prepare(crop)


def ready_to_calibrate(found: bool, stable_frames: int, needed: int) -> bool:
    """Whether a frame may become the reference pose: a face in it, steady for ``needed`` frames in a row."""
    return found and stable_frames >= needed
