"""Keypoint normalisation for animation (upstream ``animate.normalize_kp``), in numpy.

Relative motion transfers the *change* of the driving keypoints since a reference frame onto the
source keypoints, so the source keeps its own identity and pose (paper Sec. 3.4).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import KeypointError

__all__ = ["KP", "convex_hull_area", "movement_scale", "inverse_2x2", "normalize_kp", "relative_motion"]


class KP(NamedTuple):
    """Keypoints of one or more frames.

    value: float32 (B, K, 2), (x, y) in [-1, 1]. jacobian: float32 (B, K, 2, 2) or None.
    """

    value: np.ndarray
    jacobian: np.ndarray | None = None


def inverse_2x2(m, stack=np.stack):
    """Closed-form inverse of (..., 2, 2) matrices, in their own dtype.

    Written with indexing, arithmetic and ``stack`` only, so that the same lines serve numpy arrays and, with
    ``stack=torch.stack``, torch tensors (the ``frame_step`` graph computes it on the device).
    """
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    inv = stack([stack([d, -b], -1), stack([-c, a], -1)], -2)
    return inv / det[..., None, None]


def relative_motion(value, jacobian, initial_value, initial_jacobian, source_value, source_jacobian, scale,
                    stack=np.stack):
    """Driving keypoints re-anchored on the source: the arithmetic of :func:`normalize_kp`'s relative mode.

    ``value = (value - initial_value) * scale + source_value`` and
    ``jacobian = jacobian @ inv(initial_jacobian) @ source_jacobian`` (None when ``jacobian`` is None), with
    ``scale`` broadcast against (B, K, 2) values. Operators and ``stack`` only, in this order, so numpy on the
    host and torch (``stack=torch.stack``) inside the ``frame_step`` graph compute the same thing.
    Absolute motion is the special case initial 0, identity initial and source jacobians, scale 1: the
    driving keypoints come out unchanged, bit for bit.
    """
    value = (value - initial_value) * scale + source_value
    if jacobian is not None:
        jacobian = (jacobian @ inverse_2x2(initial_jacobian, stack)) @ source_jacobian
    return value, jacobian


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of 2-D points (monotone chain + shoelace), in float64."""
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[np.ndarray] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[np.ndarray] = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    if len(hull) < 3:
        return 0.0
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def movement_scale(kp_source: KP, kp_driving_initial: KP) -> float:
    """sqrt(hull area of the source keypoints) / sqrt(hull area of the reference keypoints), batch element 0.

    Raises:
        KeypointError: the reference keypoints are degenerate (collinear or coincident).
    """
    src = convex_hull_area(kp_source.value[0])
    ref = convex_hull_area(kp_driving_initial.value[0])
    if ref <= 0.0 or src <= 0.0:
        raise KeypointError(
            "cannot adapt the movement scale: the keypoints of the "
            f"{'reference frame' if ref <= 0 else 'source'} are collinear or coincide (hull area 0). "
            "Choose another reference frame or turn adapt-scale off")
    return float(np.sqrt(src) / np.sqrt(ref))


def normalize_kp(kp_source: KP, kp_driving: KP, kp_driving_initial: KP, *, adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False, use_relative_jacobian: bool = False) -> KP:
    """Driving keypoints expressed relative to a reference frame and re-anchored on the source.

    value = (kp_d - kp_init) * s + kp_src;  jacobian = J_d inv(J_init) J_src (if relative jacobian).
    Without relative movement the driving keypoints are returned unchanged ("absolute" mode).

    Args:
        kp_source: source keypoints, batch 1 (broadcast over the driving batch).
        kp_driving: keypoints of B driving frames.
        kp_driving_initial: keypoints of the reference driving frame, batch 1.
        adapt_movement_scale: scale the motion by the ratio of keypoint-hull sizes (source / reference).
    Returns:
        KP with float32 value (B, K, 2) and jacobian (B, K, 2, 2) (jacobian None if the input has none).
    """
    for name, kp in (("kp_source", kp_source), ("kp_driving", kp_driving), ("kp_driving_initial", kp_driving_initial)):
        v = np.asarray(kp.value)
        if v.ndim != 3 or v.shape[-1] != 2:
            raise KeypointError(f"{name}.value: got shape {v.shape}, expected (B, K, 2)")
    if not use_relative_movement:
        return kp_driving
    scale = movement_scale(kp_source, kp_driving_initial) if adapt_movement_scale else 1.0
    relative_jacobian = use_relative_jacobian and kp_driving.jacobian is not None
    value, jacobian = relative_motion(
        kp_driving.value, kp_driving.jacobian if relative_jacobian else None, kp_driving_initial.value,
        kp_driving_initial.jacobian, kp_source.value, kp_source.jacobian, np.float32(scale))
    if not relative_jacobian:
        jacobian = kp_driving.jacobian
    return KP(np.asarray(value, np.float32),
              None if jacobian is None else np.asarray(jacobian, np.float32))
