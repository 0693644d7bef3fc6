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
