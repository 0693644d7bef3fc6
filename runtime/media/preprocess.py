"""Turning what users have (any image file, any frame) into the model's input, and back.

Model frames are float32 RGB in [0, 1], (H, W, 3), at the config's frame size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..core.errors import ImageError, InputError
from ..core.pixels import to_uint8, to_uint8_hwc  # noqa: F401 - the media layer's names for them

FIT_MODES = ("crop", "pad", "stretch")
# File suffixes read as still images (lower case): the one list for portrait folders and image inputs.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


MIN_SOURCE_SIDE = 32  # smaller images hold no face the model can use


def _is_jpeg(data: np.ndarray) -> bool:
    return data.size > 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF


def load_image(path: str | Path, *, max_side: int | None = None, min_side: int = MIN_SOURCE_SIDE) -> np.ndarray:
    """Read an image file as RGB float32 in [0, 1], (H, W, 3), upright.

    JPEG files are decoded in colour with their EXIF orientation applied (phone photos store the camera's
    rotation there); other formats keep 16-bit depth and alpha (composited over white). Greyscale is
    accepted. ``max_side``: a JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 of its size while
    its shorter side stays at least ``max_side`` (a 6000x4000 photo for a 256 px model costs ~1/64 of the
    memory). ``min_side``: the smallest side accepted (a portrait needs room for a face; a frame of a
    training video is already at the model's size, which may be smaller).

    Raises:
        ImageError: missing file, not a readable image, or smaller than ``min_side`` px on a side.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    return decode_image(np.fromfile(str(path), dtype=np.uint8), str(path), max_side=max_side, min_side=min_side)


def decode_image(data: np.ndarray, name: str, *, max_side: int | None = None,
                 min_side: int = MIN_SOURCE_SIDE) -> np.ndarray:
    """The bytes of an image file (uint8 array) -> RGB float32, as :func:`load_image`; ``name`` is what the
    error messages call it (a path, or "the portrait" for bytes a client sent)."""
    img = None
    if data.size and _is_jpeg(data):
        flag = cv2.IMREAD_COLOR
        if max_side:
            small = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8)  # cheap: the size at 1/8
            if small is not None:
                for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                        (2, cv2.IMREAD_REDUCED_COLOR_2)):
                    if min(small.shape[:2]) * 8 // factor >= max_side:
                        flag = reduced
                        break
        img = cv2.imdecode(data, flag)  # applies the EXIF orientation
    elif data.size:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{name} is not an image OpenCV can read (PNG, JPEG, BMP, TIFF, WebP, ...)")
    if min(img.shape[:2]) < min_side:
        raise ImageError(f"{name} is {img.shape[1]}x{img.shape[0]} px, too small to hold a face; use a portrait "
                         f"of at least {min_side} px on each side (the model works on its frame size, "
                         "e.g. 256x256)")
    return to_rgb_float(img, bgr=True)


def load_source(path: str | Path, *, max_side: int | None = None) -> np.ndarray:
    """A source image file, or the first frame of a video file; RGB float32 in [0, 1]."""
    from .video import VIDEO_SUFFIXES, iter_frames  # here: video.py reads its frames with load_image

    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        for frame in iter_frames(path):
            return to_rgb_float(frame)
    return load_image(path, max_side=max_side)


def list_portraits(source: str | Path) -> list[Path]:
    """The portraits ``--source`` names: ``[source]`` for a file (read later, by :func:`load_source`); for a
    folder, its images and videos (a video's first frame is the portrait), sorted by name. Hidden files,
    sub-folders and files of other kinds are passed over. Nothing is read here.

    Raises:
        InputError: a folder with no image or video in it.
    """
    from .video import VIDEO_SUFFIXES  # here: video.py reads its frames with load_image

    source = Path(source)
    if not source.is_dir():
        return [source]
    usable = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    found = sorted((p for p in source.iterdir() if p.suffix.lower() in usable and not p.name.startswith(".")
                    and p.is_file()), key=lambda p: p.name)
    if not found:
        raise InputError(f"--source folder {source} holds no image or video ({', '.join(sorted(usable))})")
    return found


def to_rgb_float(img: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Any image array (grey, RGB(A)/BGR(A); uint8, uint16 or float in [0, 1]) -> RGB float32 in [0, 1]."""
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        out = img.astype(np.float32)
    else:
        raise ImageError(f"unsupported image dtype {img.dtype}")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    elif out.ndim == 3 and out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.ndim == 3 and out.shape[2] == 4:
        alpha = out[..., 3:4]
        out = out[..., :3] * alpha + (1.0 - alpha)  # composite over white
    elif not (out.ndim == 3 and out.shape[2] == 3):
        raise ImageError(f"unsupported image shape {img.shape}")
    if bgr:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return np.clip(out, 0.0, 1.0)


def fit_square(img: np.ndarray, mode: str = "crop") -> np.ndarray:
    """Make an image square: centre ``crop``, ``pad`` (white borders), or ``stretch`` (leave as is)."""
    if mode not in FIT_MODES:
        raise ImageError(f"unknown fit mode '{mode}'; choose from {', '.join(FIT_MODES)}")
    h, w = img.shape[:2]
    if h == w or mode == "stretch":
        return img
    if mode == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return img[top:top + s, left:left + s]
    s = max(h, w)
    out = np.ones((s, s, img.shape[2]), img.dtype)
    top, left = (s - h) // 2, (s - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def prepare_frame(img: np.ndarray, size: tuple[int, int], *, fit: str = "crop", bgr: bool = False) -> np.ndarray:
    """Any image -> model frame: RGB float32 [0, 1], (H, W, 3) at ``size`` = (H, W)."""
    rgb = fit_square(to_rgb_float(img, bgr=bgr), fit)
    h, w = size
    if rgb.shape[:2] != (h, w):
        shrink = rgb.shape[0] > h or rgb.shape[1] > w
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def to_nchw(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) float -> (N, 3, H, W) float32, contiguous."""
    if frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
