"""Keypoint-relative animation of one source image by driving frames, on any pair of backends.

The same numpy glue runs for every backend (torch, ONNX Runtime, TensorRT): only the graphs differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backends.base import Backend
from .core.errors import InputError
from .core.feeds import driving_inputs, kp_from_outputs, source_inputs, step_inputs
from .core.keypoints import KP, convex_hull_area, movement_scale, normalize_kp
from .media.preprocess import prepare_frame, to_nchw, to_uint8, to_uint8_hwc


class Animator:
    """Animate a source image with driving frames (paper Sec. 3.4, upstream ``demo.make_animation``).

    Args:
        kp_detector, generator: activated backends for the two graphs (``generator`` None with the split).
        source_encoder, generator_frame: activated backends for the per-source split, instead of ``generator``.
        frame_step: with the split, a backend of the ``frame_step`` graph: each frame then runs as one graph
            call, uint8 in and out (the split's ``generator_frame`` is only activated when a float result is
            asked for). The keypoint detector still serves the source and the reference frame.
        frame_size: the model's (H, W).
        relative: transfer relative motion (default) instead of absolute keypoints.
        adapt_scale: scale the motion by the ratio of keypoint-hull sizes (source / reference).
        fit: how non-square inputs become square: ``crop`` (centre), ``pad`` or ``stretch``.
    """

    def __init__(self, kp_detector: Backend, generator: Backend | None, frame_size: tuple[int, int], *,
                 relative: bool = True, adapt_scale: bool = False, fit: str = "crop",
                 source_encoder: Backend | None = None, generator_frame: Backend | None = None,
                 frame_step: Backend | None = None) -> None:
        if (source_encoder is None) != (generator_frame is None) or (generator is None) == (source_encoder is None):
            raise InputError("give the Animator either a generator, or a source_encoder and a generator_frame")
        if frame_step is not None and source_encoder is None:
            raise InputError("the Animator's frame_step needs the split graphs (source_encoder, generator_frame)")
        self.frame_step = frame_step
        self.kp_detector = kp_detector
        self.generator = generator
        # Per-source split: the encoder runs once in set_source, generator_frame once per frame.
        self.source_encoder = source_encoder
        self.generator_frame = generator_frame
        self._encoded: dict[str, np.ndarray] | None = None
        self.frame_size = frame_size
        self.relative = relative
        self.adapt_scale = adapt_scale
        self.fit = fit
        self.has_jacobian = "kp_jacobian" in kp_detector.spec.output_names
        self._source: np.ndarray | None = None  # (1, 3, H, W)
        self._kp_source: KP | None = None
        self._reference: KP | None = None
        self._source_batches: dict[int, dict[str, np.ndarray]] = {}
        self._step_batches: dict[tuple, dict[str, np.ndarray]] = {}  # frame_step's session inputs

    @property
    def _kp_reference(self) -> KP | None:
        return self._reference

    @_kp_reference.setter
    def _kp_reference(self, kp: KP | None) -> None:
        self._reference = kp
        self._step_batches.clear()  # they hold the reference keypoints and the movement scale

    @property
    def graphs(self) -> str:
        """The graphs that animate each frame, for summary lines: ``frame_step``, ``kp_detector +
        generator_frame`` (the split) or ``kp_detector + generator`` (the reference pair)."""
        if self.frame_step is not None:
            return "frame_step"
        return "kp_detector + " + ("generator_frame" if self.generator_frame is not None else "generator")

    # -- helpers ---------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Any image (H, W, C) -> model frame, RGB float32 in [0, 1] at the model size."""
        return prepare_frame(image, self.frame_size, fit=self.fit, bgr=bgr)

    def keypoints(self, frames: np.ndarray) -> KP:
        """Keypoints of model frames (N, H, W, 3) float32."""
        return kp_from_outputs(self.kp_detector.infer({"image": to_nchw(frames)}))

    # -- state -----------------------------------------------------------------------------------

    def set_source(self, image: np.ndarray, *, bgr: bool = False) -> None:
        """Preprocess the source once and cache everything that depends only on it."""
        frame = self.prepare(image, bgr=bgr)
        self._source = to_nchw(frame)
        self._source_u8 = to_uint8_hwc(self._source)[0]
        self._source_u8.flags.writeable = False  # shared by every caller: draw on a copy
        self._kp_source = self.keypoints(frame[None])
        if self.source_encoder is not None:
            self._encoded = {k: v.copy() for k, v in self.source_encoder.infer({"source": self._source}).items()}
        self._source_batches.clear()
        self._step_batches.clear()

    def set_reference(self, frame: np.ndarray, *, bgr: bool = False, prepared: bool = False) -> None:
        """The driving frame whose pose corresponds to the source's (relative motion starts here)."""
        model_frame = frame if prepared else self.prepare(frame, bgr=bgr)
        self._kp_reference = self.keypoints(model_frame[None])

    def set_reference_keypoints(self, kp: KP) -> None:
        """Use already computed keypoints (batch 1) as the reference."""
        self._kp_reference = kp

    def reset_reference(self) -> None:
        self._kp_reference = None

    @property
    def has_reference(self) -> bool:
        return self._kp_reference is not None

    def source_uint8(self) -> np.ndarray:
        """The preprocessed source as (H, W, 3) uint8 RGB (what the portrait looks like before motion); made
        once per source and read-only (live mode shows it on every frame until calibration)."""
        if self._source is None:
            raise InputError("call set_source() first")
        return self._source_u8

    @property
    def source_keypoints(self) -> KP:
        if self._kp_source is None:
            raise InputError("call set_source() before animating")
        return self._kp_source

    def _source_feed(self, batch: int) -> dict[str, np.ndarray]:
        # Repeated copies of the source and its keypoints, built once per batch size.
        if batch not in self._source_batches:
            source = self._encoded if self._encoded is not None else {"source": self._source}
            self._source_batches[batch] = source_inputs(source, self.source_keypoints, batch)
        return self._source_batches[batch]

    # -- animation -------------------------------------------------------------------------------

    def animate_prepared(self, frames: np.ndarray, *, return_float: bool = False) -> np.ndarray:
        """Animate model frames (N, H, W, 3) float32 in [0, 1].

        Returns:
            (N, H, W, 3) uint8 RGB, or (N, 3, H, W) float32 in [0, 1] with ``return_float``.
        """
        if frames.ndim != 4 or frames.shape[1:3] != tuple(self.frame_size):
            raise InputError(f"expected model frames (N, {self.frame_size[0]}, {self.frame_size[1]}, 3), "
                            f"got {frames.shape}")
        if self.frame_step is not None and not return_float:
            return self.animate_uint8(to_uint8(frames))
        prediction = self._generator.infer(self._motion_feed(self.keypoints(frames)))["prediction"]
        return prediction.copy() if return_float else to_uint8_hwc(prediction)

    def animate_uint8(self, frames: np.ndarray) -> np.ndarray:
        """Animate model frames (N, H, W, 3) uint8 RGB with the ``frame_step`` graph -> (N, H, W, 3) uint8 RGB.

        One graph call for the batch; without a reference yet, the first frame becomes it (one keypoint call).
        """
        if self.frame_step is None:
            raise InputError("animate_uint8 needs the frame_step graph; use animate_prepared")
        if self._kp_reference is None:
            self._kp_reference = self.keypoints(frames[:1].astype(np.float32) / np.float32(255.0))
        out = self.frame_step.infer({"driving": np.ascontiguousarray(frames), **self._step_feed(len(frames))})
        return out["frame"].copy()

    def _step_feed(self, batch: int) -> dict[str, np.ndarray]:
        """frame_step's session inputs for ``batch`` frames: built once per batch size, source and reference."""
        key = (batch, self.relative, self.adapt_scale)
        if key not in self._step_batches:
            if self._encoded is None:
                raise InputError("call set_source() before animating")
            relative = self.relative and self._kp_reference is not None
            scale = (movement_scale(self.source_keypoints, self._kp_reference)
                     if relative and self.adapt_scale else 1.0)
            self._step_batches[key] = step_inputs(self._encoded, self.source_keypoints,
                                                  self._kp_reference if relative else None, batch,
                                                  scale=scale, relative=relative)
        return self._step_batches[key]

    @property
    def _generator(self) -> Backend:
        if self.generator_frame is not None:
            return self.generator_frame.activate()  # with frame_step it is only opened when needed
        return self.generator

    def _motion_feed(self, kp_driving: KP) -> dict[str, np.ndarray]:
        """The generator feed that animates this source with driving keypoints (one row per frame)."""
        if self._kp_reference is None:  # as upstream: the first driving frame is the reference
            self._kp_reference = KP(kp_driving.value[:1].copy(),
                                    None if kp_driving.jacobian is None else kp_driving.jacobian[:1].copy())
        kp_norm = normalize_kp(self.source_keypoints, kp_driving, self._kp_reference,
                               adapt_movement_scale=self.adapt_scale, use_relative_movement=self.relative,
                               use_relative_jacobian=self.relative)
        return {**self._source_feed(len(kp_driving.value)), **driving_inputs(kp_norm)}

    def animate_batch(self, frames: Sequence[np.ndarray] | np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Animate any frames (each (H, W, C), any size) -> (N, H, W, 3) uint8 RGB at the model size."""
        prepared = np.stack([self.prepare(f, bgr=bgr) for f in frames])
        return self.animate_prepared(prepared)

    def animate(self, frame: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Animate one frame -> (H, W, 3) uint8 RGB."""
        return self.animate_batch([frame], bgr=bgr)[0]


def bucket_size(n: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` that holds ``n`` rows (``n`` itself when none does)."""
    return min((b for b in buckets if b >= n), default=n)


def animate_together(animators: Sequence[Animator], frames: np.ndarray, *,
                     buckets: Sequence[int] | None = None) -> np.ndarray:
    """Animate one model frame per animator, (N, H, W, 3) float32 in [0, 1], as one batch -> (N, H, W, 3) uint8
    RGB.

    The animators must share their backends (the same engine objects); each keeps its own source, reference
    pose and motion options, so this is N independent animations computed as one batch (fomm-serve's
    sessions). An animator without a reference takes its frame as the reference, as ``animate_prepared`` does
    alone: with ``frame_step``, the frames are rounded to uint8 (the graph's input) and run as one graph call,
    and a missing reference is found on the uint8 frame (one keypoint-detector call for each); without it, one
    keypoint-detector call and one generator call serve all of them, and a missing reference takes its frame's
    keypoints from that call.

    ``buckets``: with ``frame_step``, the batch is padded (repeating its last row) up to the smallest bucket
    that holds it, so the backend sees only those sizes: the torch backend on CUDA captures a CUDA graph (or
    compiles) once per size, and TensorRT, which re-allocates its buffers whenever the batch size changes,
    does so less often.
    """
    first = animators[0]
    if len(frames) != len(animators):
        raise InputError(f"animate_together: {len(animators)} animators but {len(frames)} frames")
    for a in animators[1:]:
        if (a.kp_detector is not first.kp_detector or a.generator is not first.generator
                or a.generator_frame is not first.generator_frame or a.frame_step is not first.frame_step):
            raise InputError("animate_together needs animators over the same backends")
    if first.frame_step is not None:
        driving = to_uint8(frames)
        for i, a in enumerate(animators):
            if a._kp_reference is None:  # found on what the graph sees, as animate_uint8 does
                a._kp_reference = a.keypoints(driving[i:i + 1].astype(np.float32) / np.float32(255.0))
        feeds = [dict(a._step_feed(1), driving=driving[i:i + 1]) for i, a in enumerate(animators)]
        feeds += [feeds[-1]] * (bucket_size(len(feeds), buckets or ()) - len(feeds))
        feed = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        return first.frame_step.infer(feed)["frame"][:len(animators)].copy()
    kp = first.keypoints(frames)
    feeds = [a._motion_feed(KP(kp.value[i:i + 1], None if kp.jacobian is None else kp.jacobian[i:i + 1]))
             for i, a in enumerate(animators)]
    feed = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    return to_uint8_hwc(first._generator.infer(feed)["prediction"])


def pose_distances(kp: KP, candidates: np.ndarray) -> np.ndarray:
    """How far each candidate pose is from ``kp``'s: (N,) float64, 0 for the same pose.

    Each keypoint set is centred and divided by the square root of its convex-hull area, then compared by
    the sum of squared differences (upstream's criterion for its best frame, with our own keypoints instead
    of face landmarks), so where the face is in the frame and how large it is do not count.

    Args:
        kp: the keypoints to match (1, K, 2).
        candidates: keypoint values of every candidate, (N, K, 2).
    """
    def normalise(points: np.ndarray) -> np.ndarray:
        centred = points - points.mean(axis=0, keepdims=True)
        area = convex_hull_area(points)
        return centred / np.sqrt(area) if area > 0 else centred

    ref = normalise(kp.value[0].astype(np.float64))
    return np.array([float(((normalise(c.astype(np.float64)) - ref) ** 2).sum()) for c in candidates])


def find_best_frame(kp_source: KP, kp_frames: np.ndarray) -> int:
    """Index of the driving frame whose pose is closest to the source's (:func:`pose_distances`).

    Args:
        kp_source: source keypoints (1, K, 2).
        kp_frames: keypoint values of every driving frame, (N, K, 2).
    """
    return int(np.argmin(pose_distances(kp_source, kp_frames)))
