"""The one conversion of model images to 8-bit pixels: float in [0, 1] -> uint8, rounded half to even and
clipped. The host (``media.preprocess`` re-exports it), the feeds and the ``frame_step`` graph (Round, Clip,
Cast in ``training/model/wrappers.py``) all compute it this way, so a uint8 frame from either path is the same.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_uint8", "to_uint8_hwc"]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float in [0, 1], any layout -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def to_uint8_hwc(batch: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 (rounded)."""
    return to_uint8(batch.transpose(0, 2, 3, 1))
