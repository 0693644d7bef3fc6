"""Ending ``fomm-live`` with a signal keeps the recording (issue #14: never lose what the user records).

A real ``fomm-live`` process on a real export, a generated clip standing in for the camera, in its own
session (as a terminal would run it): Ctrl-C to the process, Ctrl-C to its whole process group (what the
terminal sends), SIGTERM, and an impatient user pressing Ctrl-C again and again while the recording is
being finished. Each must end the session cleanly with a playable file and no ``.partial`` left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fomm_deploy.runtime.media.samples import sample_face_path, write_sample_driving_video
from fomm_deploy.runtime.media.video import iter_frames

FPS = 25


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    return write_sample_driving_video(tmp_path_factory.mktemp("signals") / "camera.mp4", frames=25, fps=FPS)


def _start(golden_export, camera: Path, out: Path, *extra: str) -> subprocess.Popen:
    script = Path(sys.executable).parent / "fomm-live"
    return subprocess.Popen([str(script), "--source", str(sample_face_path()), "--onnx", str(golden_export),
                             "--camera", str(camera), "--loop", "--no-crop", "--no-window", "--output", str(out),
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_until_recording(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the writer's temporary file exists (frames are being recorded), then a little more."""
    deadline = time.monotonic() + timeout
    while not list(out.parent.glob(f".{out.stem}.*.partial.mp4")):
        if proc.poll() is not None:
            pytest.fail(f"fomm-live ended before recording (rc {proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fomm-live did not start recording")
        time.sleep(0.05)
    time.sleep(1.5)


@pytest.mark.parametrize("how", ["SIGINT to the process", "SIGINT to the process group", "SIGTERM",
                                 "SIGINT again and again", "SIGTERM, the portrait alone at 320x240"])
def test_a_signal_ends_the_session_and_finishes_the_recording(golden_export, camera_clip, tmp_path, how):
    out = tmp_path / "out.mp4"
    portrait_alone = how.endswith("320x240")
    proc = _start(golden_export, camera_clip, out, *(("--output-size", "320x240") if portrait_alone else ()))
    try:
        _wait_until_recording(proc, out)
        if how == "SIGINT to the process group":
            os.killpg(proc.pid, signal.SIGINT)
        elif how.startswith("SIGTERM"):
            os.kill(proc.pid, signal.SIGTERM)
        elif how == "SIGINT to the process":
            os.kill(proc.pid, signal.SIGINT)
        else:  # the first asks to stop; the others land while the threads stop and the file is finished
            for _ in range(5):
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(0.04)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    name = "SIGTERM" if how.startswith("SIGTERM") else "SIGINT"
    assert proc.returncode == 0, stderr  # a user-ended session that saved its recording
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert f"ended: stopped by {name}" in stdout, stdout
    assert f"recorded {out}" in stdout, stdout
    assert out.is_file()
    assert not list(tmp_path.glob("*partial*")), list(tmp_path.iterdir())
    frames = list(iter_frames(out))  # playable: it decodes from start to end
    assert len(frames) >= FPS, len(frames)  # at least the 1.5 s recorded before the signal
    if portrait_alone:
        assert frames[0].shape == (240, 320, 3)
    else:
        assert frames[0].shape[0] == 360  # the preview
