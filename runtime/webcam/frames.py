"""What travels between the live stages: a captured frame, its framed crop, the animated result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Captured:
    """A camera frame as read.

    Attributes:
        index: 0 for the first frame the capture thread delivered, counting up (dropped ones included).
        t_capture: ``time.perf_counter()`` when it was read; latencies are measured from here.
        frame: (H, W, 3) uint8 **BGR**, as OpenCV reads it (already mirrored when mirroring is on).
    """

    index: int
    t_capture: float
    frame: np.ndarray


@dataclass
class Framed:
    """A captured frame with its square face crop, ready for the model.

    Attributes:
        box: (x, y, side) of the square crop in camera pixels; it may reach outside the frame.
        face_found: whether the face detector found a face in this frame.
        stable_frames: consecutive frames with a steady face box, as of this frame.
        crop: the model frame, (H, W, 3) float32 **RGB** in [0, 1] at the model's frame size.
    """

    captured: Captured
    box: tuple[int, int, int]
    face_found: bool
    stable_frames: int
    crop: np.ndarray


@dataclass
class Result:
    """The animated portrait for one framed frame.

    Attributes:
        portrait: (H, W, 3) uint8 **RGB** at the model's frame size (the still source until calibrated).
        t_done: ``time.perf_counter()`` when inference finished.
        calibrated: whether a reference pose existed, i.e. the portrait moves.
        portrait_index: which of the session's portraits it was animated from (0 for the first).
        still: that portrait as the model sees it, unmoved, (H, W, 3) uint8 RGB (the ghost overlay's image).
    """

    framed: Framed
    portrait: np.ndarray
    t_done: float
    calibrated: bool
    portrait_index: int = 0
    still: np.ndarray | None = None
