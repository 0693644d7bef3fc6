"""Upstream's training visualisation (``logger.Visualizer``), drawn with numpy and OpenCV only.

One row per sample of the batch, columns as upstream draws them: the source with its keypoints, the
equivariance-transformed frame with its keypoints, the driving frame with its keypoints, the deformed
source, the prediction, the occlusion map, then for every region of the dense-motion network (the
background first) the sparse-deformed source next to its mask in the keypoint's colour, and the sum of
the coloured masks. Keypoints and masks use matplotlib's ``gist_rainbow`` colour map, rebuilt here from its
published segment table so that matplotlib is not needed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fomm_deploy.runtime.core.fileio import write_image

# matplotlib's gist_rainbow: (position, (r, g, b)) control points, linearly interpolated over 256 entries.
_GIST_RAINBOW = ((0.000, (1.00, 0.00, 0.16)), (0.030, (1.00, 0.00, 0.00)), (0.215, (1.00, 1.00, 0.00)),
                 (0.400, (0.00, 1.00, 0.00)), (0.586, (0.00, 1.00, 1.00)), (0.770, (0.00, 0.00, 1.00)),
                 (0.954, (1.00, 0.00, 1.00)), (1.000, (1.00, 0.00, 0.75)))
_LUT_SIZE = 256


def _lut() -> np.ndarray:
    pos = np.array([p for p, _ in _GIST_RAINBOW])
    rgb = np.array([c for _, c in _GIST_RAINBOW])
    x = np.linspace(0, 1, _LUT_SIZE)
    return np.stack([np.interp(x, pos, rgb[:, k]) for k in range(3)], axis=1)


_RAINBOW = _lut()


def gist_rainbow(x: float) -> np.ndarray:
    """RGB in [0, 1] for ``x`` in [0, 1], as ``matplotlib.pyplot.get_cmap('gist_rainbow')(x)[:3]``."""
    index = int(np.clip(x, 0, 1) * _LUT_SIZE)
    return _RAINBOW[min(index, _LUT_SIZE - 1)]


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, np.float32)


def _nhwc(t, size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, C, h, w) tensor -> (N, H, W, 3) float in [0, 1], resized (nearest, as upstream) to ``size`` = (H, W)."""
    arr = _np(t).transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if size is not None and arr.shape[1:3] != size:
        arr = np.stack([cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) for a in arr])
    return np.clip(arr, 0, 1)


def _with_keypoints(images: np.ndarray, kp, radius: int) -> np.ndarray:
    """Disks of ``radius`` px at the keypoints (x, y in [-1, 1]); keypoint i in colour gist_rainbow(i / K)."""
    out = images.copy()
    kp = _np(kp)
    h, w = images.shape[1:3]
    for n in range(len(out)):
        canvas = np.ascontiguousarray(out[n])
        for i, (x, y) in enumerate(kp[n]):
            centre = (int(w * (x + 1) / 2), int(h * (y + 1) / 2))
            cv2.circle(canvas, centre, radius, tuple(float(c) for c in gist_rainbow(i / len(kp[n]))), -1)
        out[n] = canvas
    return out


def visualisation_grid(batch: dict, generated: dict, *, kp_size: int = 5, draw_border: bool = True) -> np.ndarray:
    """The training visualisation of one batch as an RGB uint8 image (rows: samples; columns: see module doc)."""
    source = _nhwc(batch["source"])
    size = source.shape[1:3]
    columns = [_with_keypoints(source, generated["kp_source"]["value"], kp_size)]
    if "transformed_frame" in generated:
        columns.append(_with_keypoints(_nhwc(generated["transformed_frame"]), generated["transformed_kp"]["value"],
                                       kp_size))
    columns.append(_with_keypoints(_nhwc(batch["driving"]), generated["kp_driving"]["value"], kp_size))
    if "deformed" in generated:
        columns.append(_nhwc(generated["deformed"], size))
    columns.append(_nhwc(generated["prediction"], size))
    if "occlusion_map" in generated:
        columns.append(_nhwc(generated["occlusion_map"], size))
    if "sparse_deformed" in generated and "mask" in generated:
        regions = generated["sparse_deformed"].shape[1]
        coloured = []
        for i in range(regions):
            columns.append(_nhwc(generated["sparse_deformed"][:, i], size))
            mask = _nhwc(generated["mask"][:, i:i + 1], size)
            colour = np.zeros(3) if i == 0 else gist_rainbow((i - 1) / max(regions - 1, 1))
            columns.append(mask if i == 0 else mask * colour)
            coloured.append(mask * colour)
        columns.append(np.clip(sum(coloured), 0, 1))
    if draw_border:  # upstream whitens the first and last column of pixels of every image
        for col in columns:
            col[:, :, [0, -1]] = 1.0
    grid = np.concatenate([np.concatenate(list(col), axis=0) for col in columns], axis=1)
    return (255 * np.clip(grid, 0, 1)).astype(np.uint8)


def draw_visualisation(batch: dict, generated: dict, path: Path, *, kp_size: int = 5,
                       draw_border: bool = True) -> Path:
    """Write :func:`visualisation_grid` as a PNG (atomically)."""
    grid = visualisation_grid(batch, generated, kp_size=kp_size, draw_border=draw_border)
    return write_image(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
