"""Real photographs under synthetic motion: training videos with real texture.

``python -m fomm_deploy.training.photo_motion --out DIR --videos N --size S --seed K [--photos FILE ...]``
writes ``DIR/train/*.png`` and ``DIR/test/*.png`` in upstream's layout: each video is a horizontal strip of
frames (lossless, which an MP4 at 64 px is not). A video is one square region of one photograph, cut out
of the whole photograph frame by frame while a smooth camera motion (translation, rotation, zoom and a
slight perspective tilt) moves over it, and while a few smooth local warps (Gaussian bumps whose
displacement swells and fades, as a mouth opening or an eyelid closing would) bend it. What enters the
frame at its borders is the photograph's real content, not padding. With ``--composite`` a share of the
videos keep only a soft head-shaped part of the moving region, in front of a still view of another
photograph: the motion of a talking head before a scene that stays put (a camera that does not move), which
whole-frame motion alone never shows. Everything is seeded.

It gives FOMM's generator real texture to reconstruct, which the synthetic faces (``training.synthetic``)
lack; a dataset can hold both (write them into the same ``--out``).

Without ``--photos`` the photographs are scikit-image's bundled ones that are CC0 or public domain
(``DEFAULT_PHOTOS``; ``pip install scikit-image``), found by path without importing scikit-image. Its
``astronaut.png`` is left out on purpose: it is what the bundled model is evaluated on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.fileio import write_image
from fomm_deploy.runtime.core.options import FiniteFloat
from fomm_deploy.runtime.media.preprocess import load_image, to_uint8
from fomm_deploy.training.synthetic import dataset_options

# scikit-image's data files whose docstrings (skimage/data/_fetchers.py) say CC0 or public domain.
DEFAULT_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "hubble_deep_field.jpg", "retina.jpg",
                  "brick.png", "grass.png", "gravel.png", "coins.png")
EVALUATION_PHOTOS = ("astronaut.png",)  # never trained on


def default_photos() -> list[Path]:
    """scikit-image's CC0 / public-domain photographs, or an error that says how to get them."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("no --photos given and scikit-image is not installed: pip install scikit-image "
                         "(its bundled photographs are the default), or pass --photos FILE ...")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = [data / name for name in DEFAULT_PHOTOS if (data / name).is_file()]
    if not found:
        raise InputError(f"scikit-image's photographs are not in {data}: pass --photos FILE ...")
    return found


def _smooth(rng: np.random.Generator, n: int, amplitude: float, speed: float) -> np.ndarray:
    """A smooth random signal over ``n`` frames: three sinusoids with random frequencies and phases."""
    t = np.arange(n) / max(1, n - 1)
    out = np.zeros(n)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * speed * t + rng.uniform(0, 2 * np.pi)) / 3
    return amplitude * out


def render_photo_video(photo: np.ndarray, frames: int, size: int, rng: np.random.Generator, *,
                       background: np.ndarray | None = None) -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB: one region of ``photo`` (H, W, 3 uint8) under smooth motion.

    With ``background`` (H, W, 3 uint8), only a soft head-shaped ellipse of the moving region is kept, and it
    moves and bends with the region in front of a still view of ``background``: a head moving in front of a
    scene that stays put, which uncovers and covers the scene as it goes. The extra draws come after the
    motion's, so a video's motion is the same with or without a background.
    """
    ph, pw = photo.shape[:2]
    side = rng.uniform(0.3, 0.85) * min(ph, pw)  # the region, in photo pixels
    work = 2 * size  # rendered at twice the size, then area-downscaled
    scale = work / side
    small = cv2.resize(photo, (max(1, round(pw * scale)), max(1, round(ph * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    half = work / 2
    # the region's centre, far enough from the border for most of the motion to stay inside the photo
    cx = rng.uniform(min(half * 1.1, sw / 2), max(sw - half * 1.1, sw / 2))
    cy = rng.uniform(min(half * 1.1, sh / 2), max(sh - half * 1.1, sh / 2))
    tint = rng.uniform(0.85, 1.15, 3) if rng.random() < 0.5 else np.ones(3)

    tx, ty = _smooth(rng, frames, 0.12, 1.0), _smooth(rng, frames, 0.10, 1.0)
    rot = np.deg2rad(_smooth(rng, frames, 15.0, 0.8))
    zoom = np.exp(_smooth(rng, frames, 0.12, 0.7))
    tilt_x, tilt_y = _smooth(rng, frames, 0.15, 0.6), _smooth(rng, frames, 0.15, 0.6)
    bumps = []
    for _ in range(rng.integers(1, 5)):  # local warps: centre, radius, displacement and its rhythm
        bumps.append((rng.uniform(-0.6, 0.6, 2), rng.uniform(0.12, 0.35), rng.uniform(-0.08, 0.08, 2),
                      np.clip(0.5 + _smooth(rng, frames, 1.0, 2.5), 0, 1)))

    still = mask = None
    if background is not None:
        still = _still_view(background, size, rng)
        mask = _head_mask(sw, sh, cx, cy, half, rng)

    v, u = np.mgrid[0:work, 0:work].astype(np.float32)
    u, v = (u + 0.5) / half - 1, (v + 0.5) / half - 1  # [-1, 1]
    out = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        du, dv = np.zeros_like(u), np.zeros_like(v)
        for centre, radius, disp, rhythm in bumps:
            g = np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * radius ** 2)) * rhythm[i]
            du += g * disp[0]
            dv += g * disp[1]
        x, y = u + du, v + dv
        w = 1 + tilt_x[i] * x * 0.3 + tilt_y[i] * y * 0.3  # a slight perspective
        x, y = x / w, y / w
        c, s = np.cos(rot[i]) * zoom[i], np.sin(rot[i]) * zoom[i]
        map_x = cx + (c * x - s * y + tx[i]) * half - 0.5
        map_y = cy + (s * x + c * y + ty[i]) * half - 0.5
        map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
        frame = cv2.remap(small, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) * tint
        if mask is not None:  # the outline moves and bends with the region: same maps
            alpha = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)[..., None]
            frame = alpha * frame + (1 - alpha) * still
        out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


def _still_view(background: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32: one square region of ``background``, area-downscaled, that never moves."""
    bh, bw = background.shape[:2]
    side = max(1, int(rng.uniform(0.4, 1.0) * min(bh, bw)))
    y0, x0 = int(rng.integers(0, bh - side + 1)), int(rng.integers(0, bw - side + 1))
    region = background[y0:y0 + side, x0:x0 + side]
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def _head_mask(width: int, height: int, cx: float, cy: float, half: float, rng: np.random.Generator) -> np.ndarray:
    """(height, width) float32 in [0, 1]: a soft upright ellipse, taller than wide, about the region's centre,
    in the coordinates of the scaled photo (so the frame's maps move it with the region)."""
    ax = half * rng.uniform(0.5, 0.7)
    ay = ax * rng.uniform(1.1, 1.35)
    ox, oy = rng.uniform(-0.1, 0.1, 2) * half  # not always dead centre
    feather = rng.uniform(0.04, 0.12)  # the soft edge, as a share of the radius
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.sqrt(((xx + 0.5 - cx - ox) / ax) ** 2 + ((yy + 0.5 - cy - oy) / ay) ** 2)
    return np.clip((1 + feather - r) / (2 * feather), 0, 1).astype(np.float32)


def _load_rgb(path: Path) -> np.ndarray:
    img = to_uint8(load_image(path, min_side=16))
    return img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)


def write_dataset(out: Path, videos: int, size: int, seed: int, *, photos: list[Path] | None = None,
                  frames: int = 32, test_fraction: float = 0.2, composite: float = 0.0, progress: bool = True
                  ) -> tuple[list[Path], list[Path]]:
    """Write ``videos`` photo-motion strips into ``out/train`` and ``out/test``; returns both lists of paths.

    The photographs take turns (video k uses photo k mod len(photos)), so every one is used about equally;
    video k's motion is seeded by the k-th draw of ``np.random.default_rng(seed).integers(1 << 30)``.
    A ``composite`` share of the videos, spread evenly, move a head-shaped part of their photograph over a
    still view of another one (``render_photo_video``'s ``background``), named ``photoK-FG-over-BG``.
    """
    photos = list(photos) if photos else default_photos()
    images = [_load_rgb(Path(p)) for p in photos]
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(videos * test_fraction))) if videos > 1 and test_fraction > 0 else 0
    paths: tuple[list[Path], list[Path]] = ([], [])
    for k in tqdm(range(videos), desc="photo-motion videos", unit="video", disable=not progress or None):
        which = k % len(images)
        name = Path(photos[which]).stem
        background = None
        if int((k + 1) * composite) > int(k * composite):  # video k is one of the composited share
            # another photograph than the moving one when there are several, each in turn
            back = (which + 1 + (k // len(images)) % max(1, len(images) - 1)) % len(images)
            background = images[back]
            name += f"-over-{Path(photos[back]).stem}"
        clip = render_photo_video(images[which], frames, size, np.random.default_rng(rng.integers(1 << 30)),
                                  background=background)
        split = "test" if k >= videos - n_test else "train"
        path = out / split / f"photo{k:04d}-{name}#clip0.png"
        strip = clip.transpose(1, 0, 2, 3).reshape(size, frames * size, 3)  # frames side by side
        write_image(path, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        paths[split == "test"].append(path)
    return paths


@click.command(context_settings=CONTEXT)
@dataset_options(videos=120, frames=32)
@click.option("--photos", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A photograph to move (repeat for several). Default: scikit-image's CC0 / public-domain "
                   "photographs, astronaut.png excepted.")
@click.option("--composite", default=0.0, show_default=True, type=FiniteFloat(0, 1),
              help="Share of the videos in which only a soft head-shaped part of the photograph moves, in front "
                   "of a still view of another photograph (a head moving before a scene that stays put).")
@version_option()
@user_errors
def main(out: Path, photos: tuple[Path, ...], videos: int, size: int, frames: int, seed: int,
         test_fraction: float, composite: float) -> None:
    """Write real photographs under smooth synthetic motion as training videos (OUT/train, OUT/test).

    Each video is a strip of frames (a PNG, lossless) that fomm-train reads. Example, beside the synthetic
    faces in one dataset:

    \b
      python -m fomm_deploy.training.synthetic --out data/portrait --videos 60 --size 64 --frames 64 --seed 0
      python -m fomm_deploy.training.photo_motion --out data/portrait --videos 120 --size 64 --seed 1
    """
    train, test = write_dataset(out, videos, size, seed, photos=list(photos), frames=frames,
                                test_fraction=test_fraction, composite=composite)
    click.echo(f"wrote {len(train)} training and {len(test)} test videos ({frames} frames, {size}x{size}) to {out}")


if __name__ == "__main__":
    main()
