"""The inputs an export traces, checks, calibrates and judges its graphs on.

A *feed set* maps each graph name of ``contract.graph_specs`` to a feed (input name -> array); every array
is C-contiguous with the contract's shape and dtype, float32 but for ``frame_step``'s uint8 frames:

* images (``image``, ``source``): (B, 3, H, W) in [0, 1] on the 8-bit grid;
* ``frame_step``'s ``driving``: the same driving images as (B, H, W, 3) uint8, with the session's inputs
  (``feeds.step_inputs``: the source's keypoints as the reference, relative motion, scale 1);
* keypoints: ``kp_*_value`` (B, K, 2) (x, y) in [-1, 1], ``kp_*_jacobian`` (B, K, 2, 2), as the PyTorch
  keypoint detector finds them on those images (driving keypoints are not normalised: the graphs do
  not care, and raw keypoints vary more);
* ``source_features`` / ``source_down``: what the PyTorch source encoder computes for the source.

Synthetic feeds (``sample_feeds``) check fp32 and fp16 graphs; real frames (``real_feeds`` of
``calibration_frames``) calibrate and judge int8 graphs, whose activation ranges depend on the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fomm_deploy.runtime.core.config import FommConfig
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.feeds import FeedSet, feed_set
from fomm_deploy.runtime.core.keypoints import KP
from fomm_deploy.runtime.media.preprocess import prepare_frame
from fomm_deploy.runtime.media.samples import head_motion, sample_face

CALIBRATION_FRAMES, EVALUATION_FRAMES = 24, 8


def smooth_images(batch: int, channels: int, h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic, image-like test frames (batch, channels, h, w) float32 in [0, 1], on the 8-bit grid:
    low-frequency colour waves plus soft blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / h, xx / w
    out = np.empty((batch, channels, h, w), np.float32)
    for b in range(batch):
        for c in range(channels):
            img = np.full((h, w), 0.5)
            for _ in range(3):
                fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
                img += rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            for _ in range(4):
                cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
                img += rng.uniform(-0.3, 0.3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            out[b, c] = np.clip(img, 0, 1)
    return np.round(out * 255) / 255  # on the 8-bit grid, like decoded video frames


def _keypoints(models, images: np.ndarray) -> KP:
    with torch.no_grad():
        kp = models.kp_detector(torch.from_numpy(images))
    return KP(kp["value"].numpy(), kp["jacobian"].numpy() if "jacobian" in kp else None)


def _encoded(models, source: np.ndarray) -> dict[str, np.ndarray] | None:
    """What the per-source split computes once per source (None without a dense-motion network)."""
    if models.generator.dense_motion_network is None:
        return None
    with torch.no_grad():
        src = torch.from_numpy(source)
        return {"source_features": models.generator.encode_source(src).numpy(),
                "source_down": models.generator.dense_motion_network.downsample(src).numpy()}


def _feed_set(models, source: np.ndarray, kp_source: KP, encoded, driving: np.ndarray) -> FeedSet:
    """``runtime.core.feeds.feed_set`` with the PyTorch keypoints of ``driving``, which also feeds the source
    encoder: any frame can be a source, and these vary the most."""
    return feed_set(source, kp_source, driving, _keypoints(models, driving), encoded=encoded, encoder_images=driving)


def sample_feeds(models, cfg: FommConfig, batch: int, seed: int) -> FeedSet:
    """Synthetic feeds of ``batch`` for every graph: ``batch`` smooth sources each animated by its own smooth
    driving frame (seed ``seed``, resp. ``seed + 1000``)."""
    h, w = cfg.frame_size
    source = smooth_images(batch, cfg.num_channels, h, w, seed)
    driving = smooth_images(batch, cfg.num_channels, h, w, seed + 1000)
    return _feed_set(models, source, _keypoints(models, source), _encoded(models, source), driving)


def real_feeds(models, cfg: FommConfig, frames: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per graph, one batch-1 feed per frame of a real clip (frames (N, H, W, 3) float32 in [0, 1] at the model
    size): frame 0 is the source, every frame drives it. Used to calibrate and to judge int8 graphs."""
    clip = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    source = clip[:1]
    kp_source, encoded = _keypoints(models, source), _encoded(models, source)
    out: dict[str, list] = {name: [] for name in graph_specs(cfg)}
    for i in range(len(clip)):
        for name, feed in _feed_set(models, source, kp_source, encoded, clip[i:i + 1]).items():
            out[name].append(feed)
    return out


def calibration_frames(cfg: FommConfig, video: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Real frames (N, H, W, 3) float32 in [0, 1] at the model size for int8: (calibration frames, disjoint
    evaluation frames).

    From ``video`` if given (a seeded draw of its frames, split in two), else the bundled portrait under
    two different synthetic head motions.

    Raises:
        InputError: the video has fewer than 4 frames.
    """
    if video is not None:
        from fomm_deploy.runtime.media.video import iter_frames

        frames = [prepare_frame(f, cfg.frame_size) for f in iter_frames(video)]
        if len(frames) < 4:
            raise InputError(f"--calibration {video}: has {len(frames)} frames; needs at least 4")
        order = np.random.default_rng(11).permutation(len(frames))
        n_eval = min(EVALUATION_FRAMES, len(frames) // 4)
        calib = sorted(order[n_eval:n_eval + CALIBRATION_FRAMES])
        held_out = sorted(order[:n_eval])
        return np.stack([frames[i] for i in calib]), np.stack([frames[i] for i in held_out])
    face = prepare_frame(sample_face(), cfg.frame_size)
    return head_motion(face, CALIBRATION_FRAMES, seed=11), head_motion(face, EVALUATION_FRAMES, seed=12)
