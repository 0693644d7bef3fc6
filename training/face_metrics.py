"""Face metrics on real faces with dlib: upstream's AKD and AED, the no-face share, and a mouth opening.

Optional: ``pip install 'fomm-deploy[eval]'`` (dlib-bin, the wheel of dlib, and face-recognition-models, whose
model files are public domain / CC0; dlib's 68-point landmark model was trained on the iBUG 300-W data, whose
terms allow non-commercial use only, so check them before using its output commercially). dlib is imported
only when a :class:`FaceAnalyzer` is made; without it that raises a one-line
:class:`~fomm_deploy.runtime.core.errors.BackendUnavailableError` naming the extra.

* **Detection**: dlib's HOG frontal face detector, which misses faces under about 80 px. A frame whose shorter
  side is below ``min_side`` (384 px by default) is first scaled up (bicubic) by ``min_side / shorter side``;
  the landmarks are scaled back, so every number here is in the pixels of the frame as it was given (a 64x64
  model output gives landmarks in 64x64 pixels). Measured on the carphone clip: at its own 176x144 dlib found
  no face in any frame, scaled x2 in 118 of 120; squeezed to 64x64, in 11 of 12 frames once scaled to 384.
  With several faces, the largest is used.
* **Landmarks**: dlib's 68-point shape predictor (iBUG 300-W order), as an (68, 2) float array of x, y.
* **Embedding**: dlib's ResNet face descriptor, (128,) float; two photos of one person are usually closer
  than 0.6 (dlib's threshold).
* **AKD** (average keypoint distance): per frame, the mean L2 distance between the driving and the generated
  frame's 68 landmarks, in pixels; averaged over the frames where both have a face.
* **AED** (average euclidean distance): the L2 distance of the two frames' embeddings, averaged the same way.

Upstream's evaluation (the pose-evaluation repository) used another landmark detector and OpenFace embeddings,
so its figures (VoxCeleb: AKD 1.294, AED 0.140) can be compared with these only in kind, not in value.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from fomm_deploy.runtime.core.errors import BackendUnavailableError, InputError

EVAL_EXTRA_HINT = "pip install 'fomm-deploy[eval]'"
# Frames with a shorter side below this are scaled up before detection (dlib's HOG misses faces under ~80 px).
DETECT_MIN_SIDE = 384
LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# iBUG 300-W 68-point indices (0-based)
_RIGHT_EYE, _LEFT_EYE = slice(36, 42), slice(42, 48)
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper inner lip point, the lower one below it


def model_files() -> dict[str, Path]:
    """The paths of dlib's landmark and embedding models in face-recognition-models, found without importing
    it (its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship):
    ``{"landmarks": ..., "embedding": ...}``.

    Raises:
        BackendUnavailableError: face-recognition-models is not installed or lacks a model file.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"face metrics need dlib's models (face-recognition-models): {EVAL_EXTRA_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = {"landmarks": folder / LANDMARKS_MODEL, "embedding": folder / EMBEDDING_MODEL}
    for path in files.values():
        if not path.is_file():
            raise BackendUnavailableError(f"face metrics: {path} is missing (a broken face-recognition-models); "
                                          f"reinstall it: {EVAL_EXTRA_HINT}")
    return files


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise BackendUnavailableError(f"face metrics (akd, aed) need dlib: {EVAL_EXTRA_HINT}") from None
    return dlib


@dataclass
class Face:
    """One frame's face: landmarks (68, 2) in the frame's pixels and, when asked for, the (128,) embedding."""

    landmarks: np.ndarray
    embedding: np.ndarray | None = None


class FaceAnalyzer:
    """dlib's face detector, 68-point landmarks and 128-d embeddings on RGB uint8 frames of any size.

    Args:
        min_side: frames whose shorter side is below it are scaled up to it for detection (results are in the
            original frame's pixels).
        embeddings: load the embedding model (about 0.1 s per face on a CPU); False for landmarks alone.

    Raises:
        BackendUnavailableError: dlib or face-recognition-models is not installed.
    """

    def __init__(self, *, min_side: int = DETECT_MIN_SIDE, embeddings: bool = True) -> None:
        dlib = _import_dlib()
        files = model_files()
        self.min_side = int(min_side)
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(files["landmarks"]))
        self._encoder = dlib.face_recognition_model_v1(str(files["embedding"])) if embeddings else None

    def _upscaled(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"FaceAnalyzer takes (H, W, 3) uint8 RGB frames, got {rgb.shape} {rgb.dtype}")
        short = min(rgb.shape[:2])
        if short >= self.min_side:
            return np.ascontiguousarray(rgb), 1.0
        scale = self.min_side / short
        size = (int(round(rgb.shape[1] * scale)), int(round(rgb.shape[0] * scale)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC), scale

    def analyze(self, rgb: np.ndarray, *, embedding: bool = True) -> Face | None:
        """The largest face in an (H, W, 3) uint8 RGB frame, or None when none is found: its landmarks and
        (with ``embedding`` and an analyzer made with embeddings) its embedding, from one detection."""
        big, scale = self._upscaled(rgb)
        rects = self._detector(big, 0)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self._predictor(big, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        # dlib's points are pixel indices of the scaled frame: scale their centres back
        landmarks = (points + 0.5) / scale - 0.5
        vector = None
        if embedding and self._encoder is not None:
            vector = np.array(self._encoder.compute_face_descriptor(big, shape), dtype=np.float64)
        return Face(landmarks, vector)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest face's 68 landmarks, (68, 2) float x, y in ``rgb``'s pixels, or None."""
        face = self.analyze(rgb, embedding=False)
        return None if face is None else face.landmarks

    def embedding(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest face's (128,) embedding, or None (also for an analyzer made without embeddings)."""
        face = self.analyze(rgb)
        return None if face is None else face.embedding


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres (means of each eye's six points), in the landmarks' pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(lm[_RIGHT_EYE].mean(axis=0) - lm[_LEFT_EYE].mean(axis=0)))


def mouth_opening(landmarks: np.ndarray) -> float:
    """How open the mouth is: the mean gap between the inner lips (points 61/67, 62/66, 63/65) divided by
    the inter-ocular distance, so it does not depend on the face's size (about 0 closed, 0.3-0.6 wide open)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise InputError(f"mouth_opening takes dlib's (68, 2) landmarks, got {lm.shape}")
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in _INNER_LIP_PAIRS])
    return float(gap / max(inter_ocular(lm), 1e-6))


def _paired(a: Sequence[np.ndarray | None], b: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(a) != len(b):
        raise InputError(f"driving and generated have different frame counts: {len(a)} and {len(b)}")
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def akd(driving: Sequence[np.ndarray | None], generated: Sequence[np.ndarray | None]) -> float:
    """Average keypoint distance: the mean over frames where both have landmarks (None: no face) of the mean
    L2 distance between their 68 points, in pixels; NaN when no frame has both."""
    pairs = _paired(driving, generated)
    if not pairs:
        return float("nan")
    return float(np.mean([np.linalg.norm(np.asarray(x) - np.asarray(y), axis=1).mean() for x, y in pairs]))


def aed(driving: Sequence[np.ndarray | None], generated: Sequence[np.ndarray | None]) -> float:
    """Average euclidean distance of the embeddings, over frames where both have one; NaN when none has."""
    pairs = _paired(driving, generated)
    if not pairs:
        return float("nan")
    return float(np.mean([np.linalg.norm(np.asarray(x) - np.asarray(y)) for x, y in pairs]))


def no_face_share(found: Sequence[object | None]) -> float:
    """The share of frames (0-1) whose entry is None (no face found); NaN for no frames."""
    return float(np.mean([f is None for f in found])) if len(found) else float("nan")


@dataclass
class VideoFaceMetrics:
    """One video's face metrics: AKD (pixels of its frames), AED, and the no-face shares (0-1) of the driving
    and generated frames; ``both`` frames had a face in both (the frames AKD and AED average over)."""

    frames: int
    akd: float
    aed: float
    no_face_driving: float
    no_face_generated: float
    both: int
    driving: list[Face | None] = field(default_factory=list, repr=False)
    generated: list[Face | None] = field(default_factory=list, repr=False)


def video_face_metrics(analyzer: FaceAnalyzer, driving: Iterable[np.ndarray], generated: Iterable[np.ndarray], *,
                       embeddings: bool = True) -> VideoFaceMetrics:
    """AKD, AED and the no-face shares of one video: ``driving`` and ``generated`` are the same number of
    (H, W, 3) uint8 RGB frames, frame t of one against frame t of the other (same size, so AKD is in those
    pixels). ``embeddings=False`` skips AED (NaN), which is the slow part."""
    d_faces = [analyzer.analyze(f, embedding=embeddings) for f in driving]
    g_faces = [analyzer.analyze(f, embedding=embeddings) for f in generated]
    if len(d_faces) != len(g_faces):
        raise InputError(f"driving and generated have different frame counts: {len(d_faces)} and {len(g_faces)}")
    d_lm = [None if f is None else f.landmarks for f in d_faces]
    g_lm = [None if f is None else f.landmarks for f in g_faces]
    d_emb = [None if f is None else f.embedding for f in d_faces]
    g_emb = [None if f is None else f.embedding for f in g_faces]
    return VideoFaceMetrics(frames=len(d_faces), akd=akd(d_lm, g_lm), aed=aed(d_emb, g_emb),
                            no_face_driving=no_face_share(d_faces), no_face_generated=no_face_share(g_faces),
                            both=len(_paired(d_lm, g_lm)), driving=d_faces, generated=g_faces)
