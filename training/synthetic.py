"""Synthetic talking-face videos, for training and testing without a downloadable dataset.

``python -m fomm_deploy.training.synthetic --out DIR --videos N --size S --seed K`` writes ``DIR/train/*.mp4`` and
``DIR/test/*.mp4`` (upstream's layout). Each video is one procedurally drawn identity (skin, hair,
eye, mouth and background colours and textures, face proportions) whose head translates, rotates and
scales smoothly while it blinks, moves its pupils and opens its mouth. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.options import FiniteFloat
from fomm_deploy.runtime.media.preprocess import to_uint8
from fomm_deploy.runtime.media.video import VideoWriter

SUPERSAMPLE = 3  # draw at 3x and downscale: smooth edges without an anti-aliasing renderer


@dataclass
class Identity:
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    background: tuple[np.ndarray, np.ndarray]
    face_w: float  # half-axes of the face ellipse, fraction of the frame
    face_h: float
    eye_dx: float
    eye_y: float
    mouth_y: float
    mouth_w: float
    hair_drop: float
    texture_seed: int


def random_identity(rng: np.random.Generator) -> Identity:
    skin = np.array([rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.8), rng.uniform(0.25, 0.7)])
    skin = np.sort(skin)[::-1] * rng.uniform(0.85, 1.0)  # red >= green >= blue: skin-like
    return Identity(
        skin=skin,
        hair=rng.uniform(0.02, 0.6) * np.array([1.0, rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.6)]),
        iris=rng.uniform(0.05, 0.6, 3),
        lips=np.array([rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.35)]),
        background=(rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)),
        face_w=rng.uniform(0.22, 0.27), face_h=rng.uniform(0.28, 0.33),
        eye_dx=rng.uniform(0.08, 0.11), eye_y=rng.uniform(-0.07, -0.03),
        mouth_y=rng.uniform(0.13, 0.17), mouth_w=rng.uniform(0.06, 0.09),
        hair_drop=rng.uniform(0.05, 0.14), texture_seed=int(rng.integers(1 << 30)),
    )


def _texture(shape: tuple[int, int], rng: np.random.Generator, scale: float, amount: float) -> np.ndarray:
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale)), max(2, int(w / scale)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * amount


def _smooth_track(rng: np.random.Generator, n: int, amplitude: float, speed: float) -> np.ndarray:
    """A smooth random signal: a few sinusoids with random phases."""
    t = np.arange(n)
    out = np.zeros(n)
    for _ in range(3):
        f = rng.uniform(0.3, 1.0) * speed
        out += np.sin(2 * np.pi * f * t / n * 4 + rng.uniform(0, 2 * np.pi)) / 3
    return amplitude * out


def render_video(identity: Identity, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB."""
    s = size * SUPERSAMPLE
    trng = np.random.default_rng(identity.texture_seed)
    # Background: a diagonal colour gradient with a soft texture.
    yy, xx = np.mgrid[0:s, 0:s] / s
    a = np.clip((xx + yy) / 2, 0, 1)[..., None]
    background = identity.background[0] * (1 - a) + identity.background[1] * a
    background = np.clip(background + _texture((s, s), trng, s / 8, 0.06)[..., None], 0, 1).astype(np.float32)
    skin_tex = _texture((s, s), trng, s / 40, 0.05)[..., None]

    tx = _smooth_track(rng, frames, 0.08, 1.0)
    ty = _smooth_track(rng, frames, 0.06, 1.0)
    rot = _smooth_track(rng, frames, 12.0, 0.8)
    zoom = 1 + _smooth_track(rng, frames, 0.08, 0.7)
    gaze_x = _smooth_track(rng, frames, 0.5, 1.5)
    gaze_y = _smooth_track(rng, frames, 0.3, 1.5)
    mouth = np.clip(0.5 + _smooth_track(rng, frames, 1.0, 2.5), 0, 1)
    blinks = np.ones(frames)
    for start in rng.choice(max(1, frames - 4), size=max(1, frames // 25), replace=False):
        blinks[start:start + 4] = [0.5, 0.05, 0.05, 0.5][: len(blinks[start:start + 4])]

    out = np.empty((frames, size, size, 3), np.uint8)
    c = s / 2
    for i in range(frames):
        face = np.zeros((s, s, 3), np.float32)
        mask = np.zeros((s, s), np.float32)
        px = lambda v: int(round(v * s))  # noqa: E731
        # hair behind the head, face, hair fringe
        cv2.ellipse(face, (px(0.5), px(0.5 - 0.02)), (px(identity.face_w + 0.03), px(identity.face_h + 0.03)), 0, 0,
                    360, identity.hair.tolist(), -1)
        cv2.ellipse(mask, (px(0.5), px(0.5 - 0.02)), (px(identity.face_w + 0.03), px(identity.face_h + 0.03)), 0, 0,
                    360, 1.0, -1)
        skin_layer = np.zeros((s, s), np.float32)
        cv2.ellipse(skin_layer, (px(0.5), px(0.5)), (px(identity.face_w), px(identity.face_h)), 0, 0, 360, 1.0, -1)
        skin_rgb = np.clip(identity.skin[None, None] + skin_tex, 0, 1)
        face = face * (1 - skin_layer[..., None]) + skin_rgb * skin_layer[..., None]
        cv2.ellipse(face, (px(0.5), px(0.5 - identity.face_h + identity.hair_drop / 2)),
                    (px(identity.face_w + 0.01), px(identity.hair_drop)), 0, 180, 360, identity.hair.tolist(), -1)
        # eyes: white, iris following the gaze, eyelids closing for blinks, brows
        for side in (-1, 1):
            ex, ey = 0.5 + side * identity.eye_dx, 0.5 + identity.eye_y
            open_h = 0.028 * blinks[i]
            cv2.ellipse(face, (px(ex), px(ey)), (px(0.04), max(1, px(open_h))), 0, 0, 360, (0.95, 0.95, 0.95), -1)
            if blinks[i] > 0.3:
                ix, iy = ex + gaze_x[i] * 0.018, ey + gaze_y[i] * 0.008
                cv2.circle(face, (px(ix), px(iy)), px(0.018), identity.iris.tolist(), -1)
                cv2.circle(face, (px(ix), px(iy)), px(0.008), (0.02, 0.02, 0.02), -1)
            cv2.ellipse(face, (px(ex), px(ey)), (px(0.042), max(1, px(open_h + 0.004))), 0, 0, 360,
                        (identity.skin * 0.6).tolist(), max(1, px(0.004)))
            cv2.line(face, (px(ex - 0.04), px(ey - 0.05 + 0.005 * side)), (px(ex + 0.04), px(ey - 0.055)),
                     (identity.hair * 0.8).tolist(), max(1, px(0.012)))
        # nose and mouth (opening with speech)
        cv2.line(face, (px(0.5), px(0.5 + identity.eye_y + 0.04)), (px(0.49), px(0.5 + 0.07)),
                 (identity.skin * 0.7).tolist(), max(1, px(0.008)))
        my, mw = 0.5 + identity.mouth_y, identity.mouth_w
        mh = 0.006 + 0.035 * mouth[i]
        cv2.ellipse(face, (px(0.5), px(my)), (px(mw), px(mh + 0.008)), 0, 0, 360, identity.lips.tolist(), -1)
        cv2.ellipse(face, (px(0.5), px(my)), (px(mw * 0.8), px(mh)), 0, 0, 360, (0.25, 0.05, 0.07), -1)
        # head pose: rotate / scale / translate the whole head layer onto the background
        m = cv2.getRotationMatrix2D((c, c), rot[i], zoom[i])
        m[:, 2] += (tx[i] * s, ty[i] * s)
        face_w = cv2.warpAffine(face, m, (s, s), flags=cv2.INTER_LINEAR)
        mask_w = cv2.warpAffine(np.maximum(mask, skin_layer), m, (s, s), flags=cv2.INTER_LINEAR)[..., None]
        frame = background * (1 - mask_w) + face_w * mask_w
        small = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = to_uint8(small)
    return out


def write_dataset(out: Path, videos: int, size: int, seed: int, *, frames: int = 64, test_fraction: float = 0.2,
                  fps: float = 25.0, progress: bool = True) -> tuple[list[Path], list[Path]]:
    """Write ``videos`` synthetic videos into ``out/train`` and ``out/test``; returns both lists of paths."""
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(videos * test_fraction))) if videos > 1 else 0
    paths: tuple[list[Path], list[Path]] = ([], [])
    for k in tqdm(range(videos), desc="synthetic videos", unit="video", disable=not progress or None):
        identity = random_identity(rng)
        clip = render_video(identity, frames, size, np.random.default_rng(rng.integers(1 << 30)))
        split = "test" if k >= videos - n_test else "train"
        path = out / split / f"id{k:04d}#clip0.mp4"
        with VideoWriter(path, fps, (size, size), crf=12) as writer:
            for frame in clip:
                writer.write(frame)
        paths[split == "test"].append(path)
    return paths


def dataset_options(*, videos: int, frames: int, videos_help: str = "Number of videos."):
    """The options every dataset writer takes: --out, --videos, --size, --frames, --seed, --test-fraction."""
    def decorate(f):
        for option in reversed((
            click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                         help="Dataset folder."),
            click.option("--videos", default=videos, show_default=True, type=click.IntRange(1), help=videos_help),
            click.option("--size", default=64, show_default=True, type=click.IntRange(16), help="Frame size in pixels."),
            click.option("--frames", default=frames, show_default=True, type=click.IntRange(2),
                         help="Frames per video."),
            click.option("--seed", default=0, show_default=True,
                         help="Random seed: the same seed writes the same videos."),
            click.option("--test-fraction", default=0.2, show_default=True, type=FiniteFloat(0, 0.9),
                         help="Share of the videos that go to OUT/test."))):
            f = option(f)
        return f
    return decorate


@click.command(context_settings=CONTEXT)
@dataset_options(videos=40, frames=64, videos_help="Number of videos (identities).")
@version_option()
@user_errors
def main(out: Path, videos: int, size: int, frames: int, seed: int, test_fraction: float) -> None:
    """Write synthetic talking-face videos in upstream's dataset layout (OUT/train, OUT/test)."""
    train, test = write_dataset(out, videos, size, seed, frames=frames, test_fraction=test_fraction)
    click.echo(f"wrote {len(train)} training and {len(test)} test videos ({frames} frames, {size}x{size}) to {out}")


if __name__ == "__main__":
    main()
