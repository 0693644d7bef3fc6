"""The one builder of generator feeds (``generator`` and ``generator_frame``, see ``contract.graph_specs``).

A generator feed is the source part (``{"source": (B, 3, H, W)}`` for ``generator``, or the outputs of
``source_encoder`` for ``generator_frame``), the source keypoints repeated to the batch, and the driving
keypoints of each frame. All arrays are C-contiguous float32; keypoint values are (B, K, 2) (x, y) in
[-1, 1], jacobians (B, K, 2, 2). Used by the Animator, the export checks, fomm-compare and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .keypoints import KP

__all__ = ["driving_inputs", "generator_feed", "kp_from_outputs", "source_inputs"]


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
