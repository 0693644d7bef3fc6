"""Drawing the live preview: the camera frame with its crop box beside the portrait, and the overlay text."""

from __future__ import annotations

import numpy as np

from .frames import Result


def compose_preview(result: Result, height: int, *, show_box: bool = True) -> np.ndarray:
    """Camera frame (with the crop box when ``show_box``) | portrait, both ``height`` pixels high.

    Returns (height, W, 3) uint8 **BGR**: W is the camera width scaled to ``height`` (rounded to even)
    plus ``height`` for the square portrait. The box is green with a face found, orange without.
    """
    import cv2

    cam = result.framed.captured.frame.copy()
    h, w = cam.shape[:2]
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
    """Write ``lines`` top left on a BGR uint8 canvas, in place: white text with a black outline."""
    import cv2

    for i, text in enumerate(lines):
        org = (8, 22 + 20 * i)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
