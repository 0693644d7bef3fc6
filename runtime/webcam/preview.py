"""Drawing the live preview (the camera frame with its crop box and the ghost, beside the portrait, and the
overlay text), and the portrait-alone frame that ``--output-size`` asks for."""

from __future__ import annotations

import re

import cv2
import numpy as np

from ..core.errors import InputError
from ..media.framing import paste_back
from .frames import Result

GHOST_OPACITY = 0.5  # the ghost portrait's weight over the camera crop (avatarify's overlay is about this)
OUTPUT_SIZES = ("preview", "portrait")  # besides WxH


def parse_output_size(text: str) -> str | tuple[int, int]:
    """``--output-size``: ``preview``, ``portrait``, or ``WxH`` (e.g. ``1280x720``; both even, 16 to 7680)
    -> the name, or (width, height).

    Raises:
        InputError: anything else.
    """
    value = text.strip().lower()
    if value in OUTPUT_SIZES:
        return value
    m = re.fullmatch(r"(\d+)x(\d+)", value)
    if m is None:
        raise InputError(f"--output-size {text}: give preview, portrait or WIDTHxHEIGHT such as 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    if not (16 <= w <= 7680 and 16 <= h <= 7680) or w % 2 or h % 2:
        raise InputError(f"--output-size {text}: width and height must be even numbers from 16 to 7680 "
                         "(H.264 and virtual cameras take even sizes)")
    return w, h


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, 3) uint8 scaled to fit ``size`` = (width, height) whole, keeping its aspect ratio
    (Lanczos when enlarging), centred on black: bars left and right, or above and below."""
    w, h = size
    ih, iw = image.shape[:2]
    f = min(w / iw, h / ih)
    nw, nh = max(1, min(w, int(round(iw * f)))), max(1, min(h, int(round(ih * f))))
    if (nw, nh) != (iw, ih):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LANCZOS4 if f > 1 else cv2.INTER_AREA)
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y:y + nh, x:x + nw] = image
    return out


def draw_ghost(camera_bgr: np.ndarray, still_rgb: np.ndarray, box: tuple[int, int, int],
               opacity: float = GHOST_OPACITY) -> np.ndarray:
    """The camera frame with the portrait (RGB, any size) scaled into the crop box and blended over it at
    ``opacity``: where the portrait's face is, the user's face should be. Outside the box the frame is
    unchanged. Returns a new BGR frame."""
    side = box[2]
    return paste_back(camera_bgr, cv2.cvtColor(still_rgb, cv2.COLOR_RGB2BGR), box,
                      mask=np.full((side, side), opacity, np.float32))


def compose_preview(result: Result, height: int, *, show_box: bool = True, ghost: bool = False) -> np.ndarray:
    """Camera frame (with the ghost when ``ghost`` and the crop box when ``show_box``) | portrait, both
    ``height`` pixels high.

    Returns (height, W, 3) uint8 **BGR**: W is the camera width scaled to ``height`` (rounded to even)
    plus ``height`` for the square portrait. The box is green with a face found, orange without.
    """
    cam = result.framed.captured.frame.copy()
    h, w = cam.shape[:2]
    if ghost and result.still is not None:
        cam = draw_ghost(cam, result.still, result.framed.box)
    if show_box:
        x, y, s = result.framed.box
        colour = (0, 200, 0) if result.framed.face_found else (0, 160, 255)
        cv2.rectangle(cam, (x, y), (x + s, y + s), colour, max(2, w // 320))
    cam_w = int(round(w * height / h / 2)) * 2
    cam = cv2.resize(cam, (cam_w, height), interpolation=cv2.INTER_AREA)
    portrait = cv2.resize(cv2.cvtColor(result.portrait, cv2.COLOR_RGB2BGR), (height, height),
                          interpolation=cv2.INTER_LINEAR)
    return np.concatenate([cam, portrait], axis=1)


def draw_lines(canvas: np.ndarray, lines: list[str]) -> None:
    """Write ``lines`` top left on a BGR uint8 canvas, in place: white text with a black outline, smaller
    when that many lines would not fit (the key help)."""
    step = max(12, min(20, (canvas.shape[0] - 8) // max(1, len(lines))))
    scale = 0.5 * step / 20
    for i, text in enumerate(lines):
        org = (8, step + 2 + step * i)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
