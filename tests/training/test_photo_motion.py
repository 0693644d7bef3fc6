"""Photo-motion training videos: real photographs under smooth synthetic motion, read by the dataset."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fomm_deploy.runtime.media.preprocess import load_image, to_uint8
from fomm_deploy.training.data import FramesDataset, read_video
from fomm_deploy.training.photo_motion import render_photo_video, write_dataset

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "tests" / "data" / "astronaut.png"  # a real photo for the tests; never in the training data


@pytest.fixture(scope="module")
def photo():
    return to_uint8(load_image(PHOTO))


def test_strips_are_a_dataset_of_the_requested_shape(tmp_path):
    grey = tmp_path / "grey photo.png"  # a greyscale photograph becomes three equal channels
    import cv2
    cv2.imwrite(str(grey), cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2GRAY))
    train, test = write_dataset(tmp_path / "data", videos=5, size=32, seed=0, photos=[PHOTO, grey], frames=6,
                                test_fraction=0.2, progress=False)
    assert (len(train), len(test)) == (4, 1)
    assert [p.parent.name for p in test] == ["test"]
    assert train[1].name == "photo0001-grey photo#clip0.png"  # the photographs take turns
    frames = read_video(train[1], (32, 32, 3))
    assert frames.shape == (6, 32, 32, 3)
    # The strip holds the rendered frames in order: video k is seeded by the k-th draw of the dataset's seed.
    seeds = np.random.default_rng(0).integers(1 << 30, size=5)
    expected = render_photo_video(to_uint8(load_image(PHOTO)), 6, 32, np.random.default_rng(seeds[0]))
    assert np.array_equal(read_video(train[0], (32, 32, 3)), expected)
    dataset = FramesDataset(tmp_path / "data", (32, 32, 3), is_train=True)
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample["source"].shape == (3, 32, 32) and sample["driving"].shape == (3, 32, 32)


def test_seeded_and_different_per_seed(photo):
    a = render_photo_video(photo, 8, 32, np.random.default_rng(5))
    b = render_photo_video(photo, 8, 32, np.random.default_rng(5))
    c = render_photo_video(photo, 8, 32, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_motion_is_smooth_and_real(photo):
    clip = render_photo_video(photo, 32, 64, np.random.default_rng(1)).astype(np.float32)
    step = np.abs(np.diff(clip, axis=0)).mean(axis=(1, 2, 3))  # frame to next frame
    far = np.abs(clip[0] - clip[16]).mean()
    assert step.max() < far, "neighbouring frames must be closer than frames half a clip apart"
    assert step.min() > 0.05, "every frame moves"
    # Real texture, not padding: the frames keep the photo's detail (a flat or blurred frame has little).
    detail = np.abs(np.diff(clip, axis=2)).mean()
    assert detail > 4.0
    # Its colours are the photo's: the mean colour of the clip is within the photo's range of region means.
    assert np.all(np.abs(clip.mean(axis=(0, 1, 2)) - photo.reshape(-1, 3).mean(axis=0)) < 60)


@pytest.mark.skipif(importlib.util.find_spec("skimage") is not None,
                    reason="scikit-image is installed here: its photographs are the default")
def test_no_photos_without_scikit_image_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "fomm_deploy.training.photo_motion", "--out", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode != 0
    assert "pip install scikit-image" in run.stderr and "--photos" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "d").exists()


def test_composite_moves_a_head_over_a_still_scene(photo):
    """--composite: inside the outline the frames are the plain video's, the corners are a scene that never moves."""
    scene = np.ascontiguousarray(photo[::-1, ::-1])  # another picture: the photo turned upside down
    plain = render_photo_video(photo, 24, 64, np.random.default_rng(4)).astype(np.int16)
    comp = render_photo_video(photo, 24, 64, np.random.default_rng(4), background=scene).astype(np.int16)
    centre = np.s_[:, 28:36, 28:36]  # always well inside the head's outline
    assert np.abs(comp[centre] - plain[centre]).max() <= 1, "the head moves as the plain video does"
    assert np.abs(np.diff(comp[centre], axis=0)).mean() > 0.5, "and it does move"
    for corner in (np.s_[:, :6, :6], np.s_[:, :6, -6:], np.s_[:, -6:, :6], np.s_[:, -6:, -6:]):
        assert np.array_equal(comp[corner], np.broadcast_to(comp[corner][:1], comp[corner].shape)), \
            "the scene stays put"
        assert np.abs(comp[corner] - plain[corner]).mean() > 5, "the corners show the scene, not the photo"
    # the outline moves with the head: over a black scene, the pixels that show the scene change frame to frame
    lifted = np.maximum(photo, 8)  # the photo has black pixels of its own; these cannot become 0 inside
    dark = render_photo_video(lifted, 24, 64, np.random.default_rng(4), background=np.zeros_like(photo))
    shown = np.all(dark == 0, axis=3)  # (frames, 64, 64): the scene, outside the outline
    assert 0.3 < shown.mean() < 0.95, "a head-sized part of the frame"
    assert max(np.logical_xor(shown[0], s).sum() for s in shown) > 100, "the outline moves over the scene"


def test_composite_share_in_the_dataset(tmp_path, photo):
    second = tmp_path / "flipped photo.png"
    import cv2
    cv2.imwrite(str(second), cv2.imread(str(PHOTO))[::-1])
    train, test = write_dataset(tmp_path / "data", videos=6, size=32, seed=3, photos=[PHOTO, second], frames=4,
                                test_fraction=0, composite=0.5, progress=False)
    names = [p.name for p in train + test]
    assert names == ["photo0000-astronaut#clip0.png", "photo0001-flipped photo-over-astronaut#clip0.png",
                     "photo0002-astronaut#clip0.png", "photo0003-flipped photo-over-astronaut#clip0.png",
                     "photo0004-astronaut#clip0.png", "photo0005-flipped photo-over-astronaut#clip0.png"]
    # the same motion draws as without composites: the plain videos are bit for bit those of composite=0
    plain, _ = write_dataset(tmp_path / "plain", videos=6, size=32, seed=3, photos=[PHOTO, second], frames=4,
                             test_fraction=0, progress=False)
    assert np.array_equal(read_video(train[2], (32, 32, 3)), read_video(plain[2], (32, 32, 3)))
    assert not np.array_equal(read_video(train[1], (32, 32, 3)), read_video(plain[1], (32, 32, 3)))
