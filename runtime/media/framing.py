"""Face framing for offline clips: find the face, choose a square crop box, cut it, paste a result back.

Everything here works on RGB uint8 frames and boxes in their pixels, with no state beyond a
:class:`FaceDetector`, so the webcam path can reuse the maths (``head_box``, ``cut``, ``paste_back``).

Boxes:

* a *face* is ``(cx, cy, side)``: the detector's square around the face (brow to mouth for Haar);
* a *crop box* is ``(x, y, side)`` in integer pixels, top-left corner and side, and may reach outside the
  frame (``cut`` repeats the border pixels there).

The margin follows upstream's ``crop-video.py``: the face's positions over the clip are joined into one
box (a "face tube"), which is enlarged by ``increase`` = 0.1 of its size on every side and made square
around its centre (the longer side wins). Before that, each face square is widened to a head square
(:data:`HEAD_SCALE` x the face, raised by :data:`HEAD_RAISE` x the face) because Haar's square is tighter
than the face-alignment boxes upstream joined.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import BackendUnavailableError, InputError
from .preprocess import FIT_MODES, fit_square, to_uint8

Face = tuple[float, float, float]  # cx, cy, side
CropBox = tuple[int, int, int]  # x, y, side

INCREASE = 0.1  # upstream crop-video.py's increase_area: margin on each side, as a fraction of the box
HEAD_SCALE = 1.6  # a Haar face square (brow to mouth) -> a square around the head (hair to chin)
HEAD_RAISE = 0.1  # the head square sits this fraction of the face side above the face square's centre
CROP_MODES = ("auto", "follow", "centre", "none")
# How a portrait (a still image) is framed: fomm-animate's --crop choices, taken by fomm-live's --crop and by
# fomm-serve's form field and 'source' message too (:func:`frame_portrait`). For a still, follow is auto.
PORTRAIT_CROPS = CROP_MODES
NO_FACE_ADVICE = ("FOMM animates a face centred with some margin: crop the portrait so, or expect the background "
                  "to move")


class FaceDetector:
    """The surest face in a frame, from the Haar cascades that ship with opencv-python 4.x (no download).

    Tries, in order, until one answers: the frontal cascade; the profile cascade on the frame and on its
    mirror image (heads turned either way); the frontal cascade on copies rotated by ``angles`` degrees
    (tilted heads; the found square is rotated back). Each frame is shrunk to ``detect_width`` first, and
    its histogram equalised when ``equalize`` (fomm-animate's clips; live mode passes False: on a frame that
    is mostly one flat colour, equalising leaves the face too little contrast for the cascades).

    Raises:
        BackendUnavailableError: the cascades are missing (opencv-python 5 removed them).
    """

    def __init__(self, *, detect_width: int = 640, angles: Sequence[float] = (-20.0, 20.0, -35.0, 35.0),
                 profile: bool = True, equalize: bool = True) -> None:
        self.detect_width = detect_width
        self.equalize = equalize
        self.angles = tuple(angles)
        root = getattr(getattr(cv2, "data", None), "haarcascades", "")
        self._frontal = cv2.CascadeClassifier(os.path.join(root, "haarcascade_frontalface_default.xml"))
        self._profile = cv2.CascadeClassifier(os.path.join(root, "haarcascade_profileface.xml")) if profile else None
        if self._frontal.empty() or (self._profile is not None and self._profile.empty()):
            raise BackendUnavailableError(f"cannot load OpenCV's Haar face cascades from {root!r}; install "
                                          "opencv-python<5 (5.0 removed them), or use --crop centre")

    @staticmethod
    def _candidates(cascade, grey: np.ndarray, min_side: int) -> list[tuple[float, float, float, int]]:
        """Every face the cascade finds: (cx, cy, side, votes), most votes (the surest) first."""
        faces, votes = cascade.detectMultiScale2(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        found = [(x + w / 2, y + h / 2, float(max(w, h)), int(v)) for (x, y, w, h), v in zip(faces, votes)]
        return sorted(found, key=lambda c: -c[3])

    def detect(self, frame: np.ndarray, near: Face | None = None) -> Face | None:
        """The surest face in an RGB (or BGR, or grey) uint8 frame as (cx, cy, side) in its pixels, or None.

        ``near``: where the face was a moment ago (a clip): only a face within half its side of there (and
        of a similar size) counts, so a face-like pattern elsewhere (a badge, a poster) is not taken when the
        real head tilts out of the frontal cascade's reach; the other tries then run.
        """
        h, w = frame.shape[:2]
        f = min(1.0, self.detect_width / w)
        small = cv2.resize(frame, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA) if f < 1 else frame
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small
        if self.equalize:
            grey = cv2.equalizeHist(grey)
        min_side = max(20, int(0.06 * min(grey.shape)))
        prior = None if near is None else (near[0] * f, near[1] * f, near[2] * f)
        ox = oy = 0
        if prior is not None:  # look only around the last face (3 of its sides wide): much less to search
            r = 1.5 * prior[2]
            ox, oy = max(0, int(prior[0] - r)), max(0, int(prior[1] - r))
            grey = grey[oy:int(prior[1] + r) + 1, ox:int(prior[0] + r) + 1]
            prior = (prior[0] - ox, prior[1] - oy, prior[2])
        gh, gw = grey.shape
        if min(gh, gw) < min_side:
            return None

        def pick(cands):
            for c in cands:
                if prior is None or (np.hypot(c[0] - prior[0], c[1] - prior[1]) < 0.5 * prior[2]
                                     and abs(c[2] / prior[2] - 1) < 0.4):
                    return c[:3]
            return None

        found = pick(self._candidates(self._frontal, grey, min_side))
        if found is None and self._profile is not None:
            found = pick(self._candidates(self._profile, grey, min_side))
            if found is None:
                found = pick([(gw - c[0],) + c[1:] for c in self._candidates(self._profile, grey[:, ::-1].copy(), min_side)])
        if found is None:
            centre = (gw / 2, gh / 2)
            for angle in self.angles:
                m = cv2.getRotationMatrix2D(centre, angle, 1.0)
                rotated = cv2.warpAffine(grey, m, (gw, gh), borderMode=cv2.BORDER_REPLICATE)
                back = cv2.invertAffineTransform(m)
                cands = [tuple(back @ np.array([c[0], c[1], 1.0])) + c[2:] for c in
                         self._candidates(self._frontal, rotated, min_side)]
                found = pick(cands)
                if found is not None:
                    break
        if found is None:
            return None
        return float((found[0] + ox) / f), float((found[1] + oy) / f), float(found[2] / f)


class ClipTracker:
    """Detection along a clip: each frame's face is looked for near the last one found (``FaceDetector.detect``'s
    ``near``); after ``patience`` misses in a row the whole frame is searched again (the head really moved)."""

    def __init__(self, detector: FaceDetector, *, patience: int = 4) -> None:
        self.detector, self.patience = detector, patience
        self.last: Face | None = None
        self.misses = 0

    def update(self, frame: np.ndarray) -> Face | None:
        face = self.detector.detect(frame, near=self.last)
        if face is None:
            self.misses += 1
            if self.misses >= self.patience:
                self.last, self.misses = None, 0
        else:
            self.last, self.misses = face, 0
        return face


def fill_gaps(faces: Sequence[Face | None]) -> list[Face | None]:
    """Frames without a detection take the linear interpolation of their nearest detections (the first or
    last one before the first / after the last); all None stays all None."""
    known = [i for i, f in enumerate(faces) if f is not None]
    if not known:
        return list(faces)
    idx = np.arange(len(faces))
    values = np.array([faces[i] for i in known], dtype=np.float64)
    cols = [np.interp(idx, known, values[:, k]) for k in range(3)]
    return [(float(a), float(b), float(c)) for a, b, c in zip(*cols)]


def reject_outliers(faces: Sequence[Face | None], *, window: int = 2, jump: float = 0.5,
                    resize: float = 0.35) -> list[Face | None]:
    """Drop detections that disagree with their neighbours in time (a false hit in the background, a box
    on the wrong part of a tilted head): a face whose centre is more than ``jump`` x its neighbours' median
    side from their median centre, or whose side differs from that median by more than ``resize``, becomes
    None. Neighbours: the ``window`` detections before and after it (needs at least two)."""
    known = [i for i, f in enumerate(faces) if f is not None]
    out = list(faces)
    for k, i in enumerate(known):
        near = [faces[j] for j in known[max(0, k - window):k] + known[k + 1:k + 1 + window]]
        if len(near) < 2:
            continue
        med = np.median(np.asarray(near, dtype=np.float64), axis=0)
        cx, cy, side = faces[i]
        if np.hypot(cx - med[0], cy - med[1]) > jump * med[2] or abs(side / med[2] - 1) > resize:
            out[i] = None
    return out


def head_box(face: Face, *, scale: float = HEAD_SCALE, raise_by: float = HEAD_RAISE) -> tuple[float, float, float, float]:
    """A face square -> the head's (left, top, right, bottom), floats."""
    cx, cy, side = face
    half = scale * side / 2
    cy -= raise_by * side
    return cx - half, cy - half, cx + half, cy + half


def union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The smallest (left, top, right, bottom) holding every box."""
    a = np.asarray(boxes, dtype=np.float64)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max())


def square_with_margin(box: tuple[float, float, float, float], *, increase: float = INCREASE,
                       frame_size: tuple[int, int] | None = None) -> CropBox:
    """(left, top, right, bottom) -> a square crop box: ``increase`` of the longer side added on every side,
    centred on the box. ``frame_size`` = (w, h): the side is capped at the frame's longer side."""
    left, top, right, bottom = box
    side = (1 + 2 * increase) * max(right - left, bottom - top)
    if frame_size is not None:
        side = min(side, max(frame_size))
    side = max(2, int(round(side)))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def centre_box(width: int, height: int) -> CropBox:
    """The centred square of a frame (what ``--crop centre`` and ``fit_square(.., 'crop')`` take)."""
    s = min(width, height)
    return (width - s) // 2, (height - s) // 2, s


def source_box(face: Face, frame_size: tuple[int, int], *, increase: float = INCREASE) -> CropBox:
    """The crop box of a still image around its face."""
    return square_with_margin(head_box(face), increase=increase, frame_size=frame_size)


def clip_box(faces: Sequence[Face | None], frame_size: tuple[int, int], *, increase: float = INCREASE) -> CropBox | None:
    """ONE crop box for a whole clip: the union of the head's positions (a face tube), with the margin.
    Detections that disagree with their neighbours are left out first (:func:`reject_outliers`). None when
    no frame has a face."""
    heads = [head_box(f) for f in reject_outliers(faces) if f is not None]
    if not heads:
        return None
    return square_with_margin(union(heads), increase=increase, frame_size=frame_size)


def follow_boxes(faces: Sequence[Face | None], frame_size: tuple[int, int], *, increase: float = INCREASE,
                 window: float = 7.0) -> list[CropBox] | None:
    """A crop box per frame that follows the face smoothly: outliers dropped, gaps filled, then centre and size smoothed by
    a centred Gaussian of ``window`` frames' sigma (offline: no lag), with the margin. None: no face."""
    filled = fill_gaps(reject_outliers(faces))
    if not filled or filled[0] is None:
        return None
    a = np.array(filled, dtype=np.float64)
    if len(a) > 1 and window > 0:
        radius = int(math.ceil(3 * window))
        k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / window) ** 2)
        k /= k.sum()
        padded = np.pad(a, ((radius, radius), (0, 0)), mode="edge")
        a = np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(3)], axis=1)
    return [square_with_margin(head_box(tuple(row)), increase=increase, frame_size=frame_size) for row in a]


def cut(frame: np.ndarray, box: CropBox) -> np.ndarray:
    """The square crop (side x side, same dtype and channels); parts outside the frame repeat its border."""
    x, y, s = box
    h, w = frame.shape[:2]
    pad = max(0, -x, -y, x + s - w, y + s - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x, y = x + pad, y + pad
    return frame[y:y + s, x:x + s]


def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
    """(side, side) float32 weights: 1 in the middle, falling smoothly to 0 at the edges over ``feather``
    of the side (a raised cosine), so a pasted crop has no seam."""
    ramp = max(1.0, feather * side)
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32)  # 0 on the outermost pixels
    edge = np.clip(d / ramp, 0.0, 1.0)
    edge = 0.5 - 0.5 * np.cos(np.pi * edge)
    return np.outer(edge, edge).astype(np.float32)


def paste_back(canvas: np.ndarray, crop: np.ndarray, box: CropBox, *, mask: np.ndarray | None = None) -> np.ndarray:
    """``crop`` (any size, uint8 RGB) scaled (Lanczos) to the box and blended into a copy of ``canvas`` with a
    feathered mask. Pixels outside the box (and where the mask is 0) keep the canvas exactly."""
    x, y, s = box
    h, w = canvas.shape[:2]
    out = canvas.copy()
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + s), min(h, y + s)
    if x0 >= x1 or y0 >= y1:
        return out
    if mask is None or mask.shape != (s, s):
        mask = feather_mask(s)
    big = crop if crop.shape[:2] == (s, s) else cv2.resize(crop, (s, s), interpolation=cv2.INTER_LANCZOS4)
    region = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    m = mask[region][..., None]
    inside = m > 0
    blend = big[region].astype(np.float32) * m + canvas[y0:y1, x0:x1].astype(np.float32) * (1 - m)
    blended = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(inside, blended, canvas[y0:y1, x0:x1])
    return out


@dataclass(frozen=True)
class FramedPortrait:
    """A portrait framed for the model (:func:`frame_portrait`)."""

    image: np.ndarray  # RGB uint8: the square crop, or with crop "none" the whole portrait made square by ``fit``
    box: CropBox | None  # the crop box in the portrait's pixels; None with crop "none"
    how: str  # "face", "centre" (asked for, or no face found / no detector) or "none"
    message: str  # one line for the user, the same in every command


def frame_portrait(image: np.ndarray, crop: str = "auto", *, source: str | Path = "the portrait",
                   detector: FaceDetector | None = None, fit: str = "pad") -> FramedPortrait:
    """THE framing of a portrait, for every command (fomm-animate's source, fomm-live's --source, fomm-serve's
    uploads): ``crop`` auto (or follow): the square around its head with upstream's 10 % margin
    (:func:`source_box`), or the centre square, with a warning, when no face is found; centre: the centre
    square; none: the whole portrait, made square by ``fit`` (pad: white borders; stretch: left as it is, the
    model's resize stretches it; crop: its centre square).

    ``image``: RGB uint8, as loaded (the box is in its pixels). ``source``: the portrait's path (the message
    names the file, the warning its whole path) or a name such as "the portrait". ``detector``: one to reuse
    (a new :class:`FaceDetector` otherwise; when OpenCV's cascades are missing the centre square is used and
    the message says why).

    Raises:
        InputError: ``crop`` (or ``fit``) is not one of the choices.
    """
    if crop not in PORTRAIT_CROPS:
        raise InputError(f"crop must be one of {', '.join(PORTRAIT_CROPS)}, got {crop!r}")
    name = Path(source).name if isinstance(source, Path) else str(source)
    h, w = image.shape[:2]
    if crop == "none":
        if fit not in FIT_MODES:
            raise InputError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
        square = to_uint8(fit_square(image.astype(np.float32) / 255.0, fit))  # pad: white, as the model's input
        return FramedPortrait(square, None, "none",
                              f"source crop {name}: none (the whole {w}x{h} portrait, made square by fit {fit})")
    face, why = None, ""
    if crop in ("auto", "follow"):
        try:
            face = (detector or FaceDetector()).detect(image)
        except BackendUnavailableError as exc:
            why = f"warning: {exc}; "
        else:
            if face is None:
                why = f"warning: no face found in {source}; "
    box = centre_box(w, h) if face is None else source_box(face, (w, h))
    how = "face" if face is not None else "centre"
    message = f"{why}source crop {name}: x={box[0]} y={box[1]} side={box[2]} ({how})"
    if face is None and why.startswith("warning: no face"):
        message += f"; {NO_FACE_ADVICE}"
    return FramedPortrait(cut(image, box), box, how, message)
