"""The one builder of feeds: generator feeds (``generator`` and ``generator_frame``, see
``contract.graph_specs``) and feed sets (one feed for every graph).

A generator feed is the source part (``{"source": (B, 3, H, W)}`` for ``generator``, or the outputs of
``source_encoder`` for ``generator_frame``), the source keypoints repeated to the batch, and the driving
keypoints of each frame. All arrays are C-contiguous float32; keypoint values are (B, K, 2) (x, y) in
[-1, 1], jacobians (B, K, 2, 2). Used by the Animator, the export checks, fomm-compare and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .keypoints import KP

__all__ = ["FeedSet", "driving_inputs", "feed_set", "generator_feed", "kp_from_outputs", "source_inputs"]

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


def feed_set(source: np.ndarray, kp_source: KP, driving: np.ndarray, kp_driving: KP, *,
             encoded: Mapping[str, np.ndarray] | None = None,
             encoder_images: np.ndarray | None = None) -> FeedSet:
    """One feed per graph for the driving frames ``driving`` (N, 3, H, W) animating ``source`` (1 or N, 3, H, W).

    ``kp_detector`` is fed the driving frames and ``generator`` the source with both keypoints. With
    ``encoded`` (what ``source_encoder`` computes for ``source``) the split graphs are fed too:
    ``generator_frame`` the encoded source with both keypoints, ``source_encoder`` ``encoder_images``
    (default: the source; any frame can be a source, so a caller may feed the driving frames for variety).
    """
    feeds = {"kp_detector": {"image": _f32(driving)},
             "generator": generator_feed({"source": source}, kp_source, kp_driving)}
    if encoded is not None:
        feeds["source_encoder"] = {"source": _f32(source if encoder_images is None else encoder_images)}
        feeds["generator_frame"] = generator_feed(encoded, kp_source, kp_driving)
    return feeds
