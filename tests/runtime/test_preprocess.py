"""Images as users have them: any size, grey, RGBA, 16-bit, and files that are not images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.errors import ImageError
from fomm_deploy.runtime.preprocess import fit_square, load_image, prepare_frame, to_uint8_hwc
from fomm_deploy.runtime.samples import head_motion, sample_face


@pytest.fixture
def face():
    return sample_face()


def test_sample_face(face):
    assert face.shape == (256, 256, 3) and face.dtype == np.float32 and 0 <= face.min() and face.max() <= 1


@pytest.mark.parametrize("kind", ["grey", "rgba", "uint16", "jpeg", "bgr"])
def test_load_image_formats(tmp_path, face, kind):
    bgr8 = np.rint(face[..., ::-1] * 255).astype(np.uint8)
    if kind == "grey":
        path, data = tmp_path / "g.png", cv2.cvtColor(bgr8, cv2.COLOR_BGR2GRAY)
    elif kind == "rgba":
        path, data = tmp_path / "a.png", np.dstack([bgr8, np.full(bgr8.shape[:2], 255, np.uint8)])
    elif kind == "uint16":
        path, data = tmp_path / "w.png", bgr8.astype(np.uint16) * 257
    elif kind == "jpeg":
        path, data = tmp_path / "j.jpg", bgr8
    else:
        path, data = tmp_path / "c.png", bgr8
    assert cv2.imwrite(str(path), data)
    img = load_image(path)
    assert img.shape == (256, 256, 3) and img.dtype == np.float32
    if kind in ("rgba", "uint16", "bgr"):
        np.testing.assert_allclose(img, np.rint(face * 255) / 255, atol=1e-6)  # RGB order, exact values
    elif kind == "jpeg":
        assert np.abs(img - face).mean() < 0.02


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    cv2.imwrite(str(tmp_path / "t.png"), rgba)
    np.testing.assert_allclose(load_image(tmp_path / "t.png"), 1.0)


def test_an_image_too_small_to_hold_a_face(tmp_path):
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="1x1 px, too small"):
        load_image(tmp_path / "dot.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("definitely not a PNG")
    with pytest.raises(ImageError, match="is not an image OpenCV can read"):
        load_image(tmp_path / "notes.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="is not an image"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="image not found"):
        load_image(tmp_path / "missing.jpg")


def test_fit_square_and_resize(face):
    wide = np.zeros((100, 300, 3), np.float32)
    assert fit_square(wide, "crop").shape == (100, 100, 3)
    padded = fit_square(wide, "pad")
    assert padded.shape == (300, 300, 3) and padded[0, 0, 0] == 1.0 and padded[150, 150, 0] == 0.0
    assert prepare_frame(wide, (64, 64), fit="stretch").shape == (64, 64, 3)
    assert prepare_frame(np.rint(face * 255).astype(np.uint8), (128, 128)).shape == (128, 128, 3)
    with pytest.raises(ImageError, match="unknown fit mode"):
        fit_square(wide, "zoom")


def test_uint8_round_trip():
    batch = np.linspace(0, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    out = to_uint8_hwc(batch)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8 and out.max() == 255 and out.min() == 0


def test_head_motion_starts_unmoved(face):
    frames = head_motion(face, 6, seed=1)
    assert frames.shape == (6, 256, 256, 3)
    np.testing.assert_allclose(frames[0], face, atol=1e-5)
    assert np.abs(frames[5] - face).mean() > 0.01
