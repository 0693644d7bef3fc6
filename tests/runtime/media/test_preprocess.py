"""Images as users have them: any size, grey, RGBA, 16-bit, and files that are not images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.core.errors import ImageError, InputError
from fomm_deploy.runtime.media.preprocess import (fit_square, list_portraits, load_image, prepare_frame, to_rgb_float,
                                                  to_uint8, to_uint8_hwc)
from fomm_deploy.runtime.media.samples import head_motion, sample_face


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


def _ramp(h, w):
    """(h, w, 3) float32 whose pixel (y, x) holds (x, y, 0) / 1000: every position tells where it came from."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([x, y, np.zeros_like(x)]) / 1000


def test_crop_keeps_the_centre():
    np.testing.assert_array_equal(fit_square(_ramp(100, 300), "crop"), _ramp(100, 300)[:, 100:200])
    np.testing.assert_array_equal(fit_square(_ramp(301, 100), "crop"), _ramp(301, 100)[100:200])


def test_pad_centres_the_image_on_white():
    padded = fit_square(_ramp(100, 300), "pad")
    np.testing.assert_array_equal(padded[100:200], _ramp(100, 300))
    assert (padded[:100] == 1).all() and (padded[200:] == 1).all()


def test_prepare_frame_size_is_height_width():
    out = prepare_frame(np.zeros((64, 64, 3), np.float32), (48, 80), fit="stretch")
    assert out.shape == (48, 80, 3) and out.dtype == np.float32 and out.flags.c_contiguous


def test_prepare_frame_bgr_input_becomes_rgb():
    blue_bgr = np.zeros((40, 40, 3), np.uint8)
    blue_bgr[..., 0] = 255
    out = prepare_frame(blue_bgr, (40, 40), bgr=True)
    np.testing.assert_array_equal(out[0, 0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(prepare_frame(blue_bgr, (40, 40))[0, 0], [1.0, 0.0, 0.0])


def test_shrinking_averages_and_enlarging_interpolates():
    checker = (np.indices((128, 128)).sum(0) % 2).astype(np.float32)
    shrunk = prepare_frame(checker, (40, 40))
    np.testing.assert_allclose(shrunk, 0.5, atol=0.05)  # area averaging, no aliasing (linear: 0.5 +- 0.32)
    halves = np.zeros((32, 32), np.float32)
    halves[:, 16:] = 1
    enlarged = prepare_frame(halves, (64, 64))
    assert ((enlarged > 0.05) & (enlarged < 0.95)).any()  # linear, not nearest neighbour
    np.testing.assert_allclose(enlarged[:, :28], 0, atol=1e-6)
    np.testing.assert_allclose(enlarged[:, 36:], 1, atol=1e-6)


def test_to_uint8_rounds_and_clips():
    values = np.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 0.5, 254.6 / 255, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 0, 1, 128, 255, 255, 255])


def test_to_uint8_hwc_layout():
    batch = np.random.default_rng(0).uniform(0, 1, (2, 3, 5, 7)).astype(np.float32)
    out = to_uint8_hwc(batch)
    assert out.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(out[1, 4, 6], np.rint(batch[1, :, 4, 6] * 255).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 2, 5], np.rint(batch[0, :, 2, 5] * 255).astype(np.uint8))


def test_to_rgb_float_clips_and_refuses_what_it_cannot_read():
    np.testing.assert_array_equal(to_rgb_float(np.array([[[-0.5, 0.5, 1.5]]], np.float32)), [[[0.0, 0.5, 1.0]]])
    with pytest.raises(ImageError, match="unsupported image dtype int32"):
        to_rgb_float(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageError, match=r"unsupported image shape \(4, 4, 2\)"):
        to_rgb_float(np.zeros((4, 4, 2), np.uint8))


def test_one_short_side_is_too_small(tmp_path):
    cv2.imwrite(str(tmp_path / "strip.png"), np.zeros((20, 400, 3), np.uint8))
    with pytest.raises(ImageError, match="400x20 px, too small"):
        load_image(tmp_path / "strip.png")


def test_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(ImageError, match=r"image not found: .* \(it is a folder\)"):
        load_image(tmp_path)


def test_large_jpeg_is_decoded_reduced(tmp_path):
    big = np.full((768, 1024, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    assert load_image(tmp_path / "big.jpg").shape == (768, 1024, 3)
    # 1/8 would give a 96 px short side (< 100); 1/4 is the smallest that keeps at least 100
    assert load_image(tmp_path / "big.jpg", max_side=100).shape == (192, 256, 3)
    assert load_image(tmp_path / "big.jpg", max_side=700).shape == (768, 1024, 3)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01"  # big-endian header, IFD0 at 8, one entry
            + b"\x01\x12\x00\x03\x00\x00\x00\x01" + orientation.to_bytes(2, "big") + b"\x00\x00"  # Orientation
            + b"\x00\x00\x00\x00")  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + app1 + jpeg[2:]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = np.zeros((40, 64, 3), np.uint8)
    img[:20] = 255  # white top half
    ok, jpeg = cv2.imencode(".jpg", img)
    assert ok
    (tmp_path / "phone.jpg").write_bytes(_with_exif_orientation(jpeg.tobytes(), 6))  # 6: rotate 90 clockwise
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (64, 40, 3)
    assert upright[:, 30:].mean() > 0.9 and upright[:, :10].mean() < 0.1  # the top went to the right


def test_list_portraits_takes_images_and_videos_by_name(tmp_path):
    for name in ("b.mp4", "a.PNG", "c.txt", ".d.png"):
        (tmp_path / name).write_bytes(b"not read here")
    (tmp_path / "e.jpg").mkdir()
    assert [p.name for p in list_portraits(tmp_path)] == ["a.PNG", "b.mp4"]
    assert list_portraits(tmp_path / "one.jpg") == [tmp_path / "one.jpg"]  # a file: itself, read later
    for p in list(tmp_path.iterdir()):
        if p.suffix.lower() in (".png", ".mp4"):
            p.unlink()
    with pytest.raises(InputError, match="holds no image or video"):
        list_portraits(tmp_path)
