"""The one builder of feeds: generator feeds (``generator`` and ``generator_frame``, see
``contract.graph_specs``) and feed sets (one feed for every graph).

A generator feed is the source part (``{"source": (B, 3, H, W)}`` for ``generator``, or the outputs of
``source_encoder`` for ``generator_frame``), the source keypoints repeated to the batch, and the driving
keypoints of each frame. A ``frame_step`` feed is a uint8 driving frame and the session's constants
(:func:`step_inputs`). All arrays are C-contiguous float32 (but ``frame_step``'s frames: uint8); keypoint
values are (B, K, 2) (x, y) in [-1, 1], jacobians (B, K, 2, 2). Used by the Animator, the export checks,
fomm-compare and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .keypoints import KP, relative_motion
from .pixels import to_uint8_hwc

__all__ = ["FeedSet", "driving_inputs", "feed_set", "generator_feed", "kp_from_outputs", "source_inputs",
           "split_step_feed", "step_image", "step_inputs"]

# A feed set: graph name -> its feed (input name -> array).
FeedSet = dict[str, dict[str, np.ndarray]]


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def kp_from_outputs(outputs: Mapping[str, np.ndarray]) -> KP:
    """``kp_detector`` outputs (``kp_value``, optional ``kp_jacobian``) -> :class:`KP`, copied (backends may
    reuse their output buffers)."""
    jac = outputs.get("kp_jacobian")
    return KP(np.array(outputs["kp_value"], np.float32), None if jac is None else np.array(jac, np.float32))


def _kp_inputs(who: str, kp: KP, repeat: int = 1) -> dict[str, np.ndarray]:
    def rep(a: np.ndarray) -> np.ndarray:
        return _f32(np.repeat(a, repeat, 0) if repeat != 1 else a)

    feed = {f"kp_{who}_value": rep(kp.value)}
    if kp.jacobian is not None:
        feed[f"kp_{who}_jacobian"] = rep(kp.jacobian)
    return feed


def source_inputs(source: Mapping[str, np.ndarray], kp_source: KP, batch: int) -> dict[str, np.ndarray]:
    """The per-source half of a generator feed for ``batch`` frames.

    Args:
        source: ``{"source": image}`` or the ``source_encoder`` outputs, each with batch 1 (repeated) or
            already ``batch``.
        kp_source: the source's keypoints, batch 1 (repeated) or ``batch``.
    """
    feed = {k: _f32(np.repeat(v, batch, 0) if len(v) == 1 and batch != 1 else v) for k, v in source.items()}
    feed.update(_kp_inputs("source", kp_source, batch if len(kp_source.value) == 1 else 1))
    return feed


def driving_inputs(kp_driving: KP) -> dict[str, np.ndarray]:
    """The per-frame half: ``kp_driving_value`` (and ``kp_driving_jacobian``), one row per frame."""
    return _kp_inputs("driving", kp_driving)


def generator_feed(source: Mapping[str, np.ndarray], kp_source: KP, kp_driving: KP) -> dict[str, np.ndarray]:
    """A whole generator feed: ``source`` animated by each row of ``kp_driving``."""
    return {**source_inputs(source, kp_source, len(kp_driving.value)), **driving_inputs(kp_driving)}


def _placeholder(kp: KP) -> KP:
    """Initial keypoints for absolute motion, where ``frame_step`` does not use them: zeros and identity
    jacobians (finite, so nothing undefined is computed on the unused branch)."""
    value = np.zeros_like(kp.value[:1])
    if kp.jacobian is None:
        return KP(value)
    return KP(value, np.broadcast_to(np.eye(2, dtype=np.float32), kp.jacobian[:1].shape).copy())


def step_inputs(encoded: Mapping[str, np.ndarray], kp_source: KP, kp_initial: KP | None, batch: int, *,
                scale: float | np.ndarray = 1.0, relative: bool | np.ndarray = True) -> dict[str, np.ndarray]:
    """The session half of a ``frame_step`` feed for ``batch`` frames (everything but ``driving``).

    Args:
        encoded: the ``source_encoder`` outputs, batch 1 (repeated) or ``batch``.
        kp_source: the source's keypoints, batch 1 or ``batch``.
        kp_initial: the reference driving frame's keypoints, batch 1 or ``batch``; None for absolute motion.
        scale: the movement scale (``keypoints.movement_scale`` with adapt-scale, else 1), one or per row.
        relative: relative motion, one or per row (an absolute row's initial keypoints are not used).
    """
    feed = source_inputs(encoded, kp_source, batch)
    kp_initial = _placeholder(kp_source) if kp_initial is None else kp_initial
    feed.update(_kp_inputs("initial", kp_initial, batch if len(kp_initial.value) == 1 else 1))
    for name, v in (("movement_scale", scale), ("relative", relative)):
        feed[name] = _f32(np.broadcast_to(np.asarray(v, np.float32).reshape(-1, 1), (batch, 1)))
    return feed


def step_image(step_feed: Mapping[str, np.ndarray]) -> np.ndarray:
    """A ``frame_step`` feed's driving frames as the ``kp_detector`` takes them: (B, C, H, W) float32 in [0, 1]
    (the graph's own first operations: HWC -> CHW, uint8 -> float, / 255)."""
    return np.ascontiguousarray(step_feed["driving"].transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def split_step_feed(step_feed: Mapping[str, np.ndarray], kp_driving: KP) -> dict[str, np.ndarray]:
    """The ``generator_frame`` feed that does on the host what ``frame_step`` does inside: the driving
    keypoints ``kp_driving`` (of :func:`step_image`) normalised with the feed's session constants. With it, the
    split graphs compute a ``frame_step`` feed, which is how export and the tests check the one against the other.
    """
    f = step_feed
    jacobian = kp_driving.jacobian
    value, rel_jacobian = relative_motion(kp_driving.value, jacobian, f["kp_initial_value"],
                                          f.get("kp_initial_jacobian"), f["kp_source_value"],
                                          f.get("kp_source_jacobian"), f["movement_scale"][:, :, None])
    use = f["relative"][:, :, None] > 0.5
    kp = KP(np.where(use, value, kp_driving.value).astype(np.float32),
            None if jacobian is None else np.where(use[..., None], rel_jacobian, jacobian).astype(np.float32))
    source = {k: f[k] for k in f if k.startswith("source_") or k.startswith("kp_source")}
    return {**{k: _f32(v) for k, v in source.items()}, **driving_inputs(kp)}


def feed_set(source: np.ndarray, kp_source: KP, driving: np.ndarray, kp_driving: KP, *,
             encoded: Mapping[str, np.ndarray] | None = None,
             encoder_images: np.ndarray | None = None, kp_initial: KP | None = None) -> FeedSet:
    """One feed per graph for the driving frames ``driving`` (N, 3, H, W) animating ``source`` (1 or N, 3, H, W).

    ``kp_detector`` is fed the driving frames and ``generator`` the source with both keypoints. With
    ``encoded`` (what ``source_encoder`` computes for ``source``) the split graphs are fed too:
    ``generator_frame`` the encoded source with both keypoints, ``source_encoder`` ``encoder_images``
    (default: the source; any frame can be a source, so a caller may feed the driving frames for variety),
    and ``frame_step`` the driving frames as uint8 (they must lie on the 8-bit grid, as decoded video does)
    with ``kp_initial`` as the reference keypoints (default: the source's, as when the source is the first
    driving frame), relative motion and scale 1.
    """
    feeds = {"kp_detector": {"image": _f32(driving)},
             "generator": generator_feed({"source": source}, kp_source, kp_driving)}
    if encoded is not None:
        feeds["source_encoder"] = {"source": _f32(source if encoder_images is None else encoder_images)}
        feeds["generator_frame"] = generator_feed(encoded, kp_source, kp_driving)
        feeds["frame_step"] = {"driving": np.ascontiguousarray(to_uint8_hwc(np.asarray(driving))),
                               **step_inputs(encoded, kp_source, kp_source if kp_initial is None else kp_initial,
                                             len(driving))}
    return feeds
