"""fomm-animate on phone-like media and awkward requests: every frame, audio in sync, inputs never replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.media.samples import sample_face
from fomm_deploy.runtime.media.video import iter_timed_frames, open_video
from tests import media_corpus as mc


def _animate(*args, cwd, **kw):
    return subprocess.run([str(Path(sys.executable).parent / "fomm-animate"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, **kw)


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    root = tmp_path_factory.mktemp("phone media ü")
    face = np.rint(sample_face()[..., ::-1] * 255).astype(np.uint8)
    cv2.imwrite(str(root / "portrait.png"), face)
    return {"root": root, "portrait": root / "portrait.png",
            "short_audio": mc.short_audio_clip(root / "short audio.mp4", seconds=2.0, audio_seconds=1.9, size=128),
            "offset": mc.offset_clip(root / "late video.mp4", video_start=1.0, beep_at=1.5, size=128),
            "vfr": mc.vfr_clip(root / "vfr.mp4", size=128),
            "rotated": mc.exif_rotated_jpeg(root / "phone photo.jpg", cv2.rotate(face, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                            orientation=6)}


def test_audio_shorter_than_the_video_keeps_every_frame(phone, golden_export, tmp_path):
    out = tmp_path / "result with space.mp4"
    res = _animate("--source", phone["portrait"], "--driving", phone["short_audio"], "--out", out,
                   "--onnx", golden_export, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert mc.count_frames(out) == 50 and "50 frames (2.00 s at 25.00 fps) from 50 driving frames" in res.stdout
    assert len(mc.decoded_audio(out)) / 8000 == pytest.approx(2.0, abs=0.05)


def test_variable_frame_rate_follows_the_timestamps(phone, golden_export, tmp_path):
    out = tmp_path / "vfr.mp4"
    res = _animate("--source", phone["portrait"], "--driving", phone["vfr"], "--out", out, "--onnx", golden_export,
                   cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cap, info = open_video(out)
    cap.release()
    times = [t for _, t in iter_timed_frames(phone["vfr"])]
    # 60 driving frames over 2 s (1 s at 50 fps, 1 s at 10 fps) -> 2 s at a constant 50 fps, not 1.2 s.
    assert info.fps == 50 and mc.count_frames(out) == 100 and times[-1] == pytest.approx(1.9, abs=0.01)
    frames = [f for f, _ in iter_timed_frames(out)]
    # 10 fps part: each animated frame is held for 5 output frames
    assert all(np.array_equal(frames[60], frames[60 + k]) or np.abs(frames[60].astype(int) - frames[60 + k]).max() < 8
               for k in range(1, 5))


def test_video_starting_after_its_audio_stays_in_sync(phone, golden_export, tmp_path):
    out = tmp_path / "synced.mp4"
    res = _animate("--source", phone["portrait"], "--driving", phone["offset"], "--out", out, "--onnx", golden_export,
                   cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    audio = mc.decoded_audio(out)
    assert np.argmax(np.abs(audio) > 0.3) / 8000 == pytest.approx(0.5, abs=0.05)


def test_exif_rotated_photo_is_animated_upright(phone, golden_export, tmp_path):
    results = {}
    for name in ("portrait", "rotated"):
        out = tmp_path / f"{name}.mp4"
        res = _animate("--source", phone[name], "--driving", phone["short_audio"], "--out", out, "--onnx",
                       golden_export, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        results[name] = next(iter_timed_frames(out))[0].astype(float)
    # JPEG loss only: the rotated phone photo animates like the upright original, not sideways
    assert np.abs(results["portrait"] - results["rotated"]).mean() < 6


@pytest.mark.parametrize("audio_seconds", [1.0, None])
def test_one_frame_driving_video(phone, golden_export, tmp_path, audio_seconds):
    """A one-frame clip animates into one frame lasting 1/fps; a longer audio track is cut to that frame."""
    driving = mc.one_frame_clip(tmp_path / "one frame.mp4", fps=25, audio_seconds=audio_seconds, size=128)
    out = tmp_path / "out" / "result.mp4"
    out.parent.mkdir()
    res = _animate("--source", phone["portrait"], "--driving", driving, "--out", out, "--onnx", golden_export,
                   cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    sound = "with audio" if audio_seconds else "no audio in the driving video"
    assert f"1 frames (0.04 s at 25.00 fps) from 1 driving frames, 128x128, {sound}" in res.stdout
    cap, info = open_video(out)
    cap.release()
    assert (info.fps, info.frame_count, mc.count_frames(out)) == (25, 1, 1)
    assert [t for _, t in iter_timed_frames(out)] == [0.0]
    if audio_seconds:
        assert info.duration == pytest.approx(0.04, abs=0.01)  # the file is as long as its one frame ...
        assert len(mc.decoded_audio(out)) / 8000 == pytest.approx(0.04, abs=0.01)  # ... audio cut to it
    else:
        assert info.audio_start is None
    assert [p.name for p in out.parent.iterdir()] == ["result.mp4"]


def test_a_raw_h264_driving_stream_keeps_its_timing_and_its_end(phone, golden_export, tmp_path):
    """A bare H.264 stream has no timestamps: its 100 frames all read 0 s, so the result was one frame long and
    --end (fomm-serve's cap on the driving clip) never came."""
    clip = mc.raw_h264(tmp_path / "upload.h264", size=128)
    res = _animate("--source", phone["portrait"], "--driving", clip, "--out", tmp_path / "all.mp4",
                   "--onnx", golden_export, "--crop", "centre", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "100 frames (4.00 s at 25.00 fps) from 100 driving frames" in res.stdout
    res = _animate("--source", phone["portrait"], "--driving", clip, "--out", tmp_path / "end.mp4",
                   "--onnx", golden_export, "--crop", "centre", "--end", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "25 frames (1.00 s at 25.00 fps) from 25 driving frames" in res.stdout
    assert mc.count_frames(tmp_path / "end.mp4") == 25


@pytest.mark.parametrize("maker, message", [
    (mc.truncated_front_index, r"is truncated: its index announces 100 frames and only \d+ are in the file"),
    (mc.damaged_mid_clip, r"is damaged: its index announces 100 frames and only \d+ could be decoded"),
])
def test_a_cut_or_damaged_driving_clip_is_one_named_error(phone, golden_export, tmp_path, maker, message):
    """fomm-animate exited 0 with 41 of 100 frames and only FFmpeg's own lines on stderr: now one Error: line
    names the file and the counts, no FFmpeg line comes before it, and nothing is written."""
    clip = maker(tmp_path / "phone clip.mp4")
    out = tmp_path / "out" / "result.mp4"
    res = _animate("--source", phone["portrait"], "--driving", clip, "--out", out, "--onnx", golden_export,
                   "--crop", "centre", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(clip) in errors[0], res.stderr
    import re

    assert re.search(message, errors[0]), errors[0]
    assert not [line for line in res.stderr.splitlines() if line.startswith("[")], res.stderr  # no FFmpeg noise
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_max_frames_uses_that_many_driving_frames(phone, golden_export, tmp_path):
    out = tmp_path / "preview.mp4"
    res = _animate("--source", phone["portrait"], "--driving", phone["short_audio"], "--out", out, "--onnx",
                   golden_export, "--start", "0.4", "--max-frames", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3 frames (0.12 s at 25.00 fps) from 3 driving frames" in res.stdout and "with audio" in res.stdout
    assert mc.count_frames(out) == 3
    assert len(mc.decoded_audio(out)) / 8000 == pytest.approx(0.12, abs=0.01)  # the audio is cut to the frames


def test_reference_frame_beyond_max_frames_names_max_frames(phone, golden_export, tmp_path):
    res = _animate("--source", phone["portrait"], "--driving", phone["short_audio"], "--out", tmp_path / "o.mp4",
                   "--onnx", golden_export, "--max-frames", "3", "--reference-frame", "5", cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "--reference-frame 5: --max-frames 3 uses only frames 0 to 2" in res.stderr, res.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("script", ["fomm-animate", "fomm-live"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_max_frames_below_one_is_a_one_line_error(phone, golden_export, tmp_path, script, value):
    args = {"fomm-animate": ("--driving", phone["short_audio"], "--out", tmp_path / "o.mp4"),
            "fomm-live": ("--camera", phone["short_audio"], "--no-window", "--out", tmp_path / "o.mp4")}[script]
    res = subprocess.run([str(Path(sys.executable).parent / script), "--source", str(phone["portrait"]), "--onnx",
                          str(golden_export), *map(str, args), "--max-frames", value], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [f"Error: --max-frames must be at least 1, got {value}"], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_inputs_are_never_overwritten(phone, golden_export, tmp_path):
    driving = tmp_path / "drive.mp4"
    driving.write_bytes(phone["short_audio"].read_bytes())
    before = driving.read_bytes()
    for out in (driving, tmp_path / "." / "drive.mp4"):
        res = _animate("--source", phone["portrait"], "--driving", driving, "--out", out, "--onnx", golden_export,
                       "--force", cwd=tmp_path)
        assert res.returncode == 1 and "is the --driving input" in res.stderr and "Traceback" not in res.stderr
    assert driving.read_bytes() == before
    existing = tmp_path / "done.mp4"
    existing.write_bytes(b"an earlier result")
    res = _animate("--source", phone["portrait"], "--driving", driving, "--out", existing, "--onnx", golden_export,
                   cwd=tmp_path)
    assert res.returncode == 1 and "exists; pass --force" in res.stderr
    assert existing.read_bytes() == b"an earlier result"
    res = _animate("--source", phone["portrait"], "--driving", driving, "--out", existing, "--onnx", golden_export,
                   "--force", cwd=tmp_path)
    assert res.returncode == 0 and mc.count_frames(existing) == 50


@pytest.mark.parametrize("args, message", [
    (("--ckpt", "x.pth.tar"), "--ckpt is read only by --backend torch"),
    (("--backend", "torch", "--providers", "cpu"), "--backend torch does not use them"),
    (("--best-frame", "--absolute"), "with --absolute there is no reference"),
    (("--driving", "https://example.com/talk.mp4"), "URLs are not supported"),
    # advice in this command's terms: fomm-animate has no --config to suggest
    (("--backend", "torch", "--ckpt", str(Path(__file__).resolve().parents[2] / "checkpoints" / "synthetic-faces.pth.tar")),
     "does not fit this export's config 'tiny-test'"),
])
def test_contradictions_and_urls_are_one_line_errors(phone, golden_export, tmp_path, args, message):
    base = {"--source": phone["portrait"], "--driving": phone["short_audio"], "--out": tmp_path / "o.mp4",
            "--onnx": golden_export}
    extra = list(args)
    if extra[0] == "--driving":
        base["--driving"] = extra[1]
        extra = []
    res = _animate(*[x for kv in base.items() for x in kv], *extra, cwd=tmp_path)
    assert res.returncode in (1, 2) and "Traceback" not in res.stderr  # 2: click's usage errors
    assert message in res.stderr, res.stderr
    assert "Use --config" not in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_animation_leaves_no_file(phone, golden_export, tmp_path, sig):
    long_clip = mc.short_audio_clip(tmp_path / "long.mp4", seconds=30, audio_seconds=30, size=128)
    work = tmp_path / "out dir"
    work.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "fomm-animate"), "--source", str(phone["portrait"]),
                             "--driving", str(long_clip), "--out", str(work / "result.mp4"), "--onnx", str(golden_export)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(work.iterdir()):
        time.sleep(0.05)  # the writer's hidden temporary file appears once animation has started
    assert list(work.iterdir()), "animation never started"
    time.sleep(0.5)
    os.killpg(proc.pid, sig)  # the whole process group, as Ctrl-C in a terminal (or a service manager) does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in err, err[-2000:]
    assert list(work.iterdir()) == []  # neither result.mp4 nor a playable .partial.mp4


@pytest.mark.parametrize("script, args, message", [
    ("fomm-compare", ("--backends", "onnxruntime,torch", "--precision", "fp16"), "on a CUDA GPU only"),
    ("fomm-compare", ("--backends", "torch,torch"), "with itself"),
    ("fomm-export", ("--ckpt", "x.pth.tar", "--calibration", "clip.mp4", "--out", "o"), "writes none"),
])
def test_options_that_would_be_ignored_are_refused(golden_export, tmp_path, script, args, message):
    extra = ("--onnx", str(golden_export)) if script == "fomm-compare" else ()
    res = subprocess.run([str(Path(sys.executable).parent / script), *args, *extra], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
