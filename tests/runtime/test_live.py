"""Live mode, headless: generated video files stand in for the camera."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.animator import Animator
from fomm_deploy.runtime.backends.base import Backend
from fomm_deploy.runtime import graphs, live
from fomm_deploy.runtime.core.errors import BackendUnavailableError, CameraError, InputError
from fomm_deploy.runtime.graphs import load_exported, make_backend
from fomm_deploy.runtime.media.preprocess import list_portraits
from fomm_deploy.runtime.media.samples import sample_face, sample_face_path
from fomm_deploy.runtime.media.video import VideoWriter, iter_frames
from fomm_deploy.runtime.webcam.capture import open_camera
from fomm_deploy.runtime.webcam.frames import Captured, Framed, Result
from fomm_deploy.runtime.webcam.framer import FaceFramer
from fomm_deploy.runtime.webcam.session import LiveOptions, LiveReport, LiveSession
from fomm_deploy.runtime.webcam.virtualcam import require_pyvirtualcam

REPO = Path(__file__).resolve().parents[2]
CAM_W, CAM_H, FPS = 640, 480, 25


def _moving_subject_clip(path: Path, frames: int) -> list[int]:
    """The portrait (200 px) sliding left to right over a grey 640x480 'room'; returns its x per frame."""
    face = np.rint(cv2.resize(sample_face(), (200, 200)) * 255).astype(np.uint8)
    xs = []
    with VideoWriter(path, FPS, (CAM_W, CAM_H)) as w:
        for i in range(frames):
            canvas = np.full((CAM_H, CAM_W, 3), 100, np.uint8)
            x = 40 + int(i * 360 / max(frames - 1, 1))
            canvas[120:320, x:x + 200] = face
            w.write(canvas)
            xs.append(x)
    return xs


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "camera.mp4"
    xs = _moving_subject_clip(path, 40)
    return path, xs


def _animator(golden_export, slow_seconds: float = 0.0):
    exported = load_exported(golden_export)
    kp = make_backend("onnxruntime", exported, "kp_detector").activate()
    gen = make_backend("onnxruntime", exported, "generator").activate()
    if slow_seconds:
        gen = SlowBackend(gen, slow_seconds).activate()
    return Animator(kp, gen, exported.frame_size, relative=True, adapt_scale=True)


class SlowBackend(Backend):
    """The real ONNX Runtime generator, made artificially slow (a GPU-less laptop, a huge model)."""

    kind = "slow"

    def __init__(self, inner: Backend, seconds: float) -> None:
        super().__init__(inner.spec)
        self.inner, self.seconds = inner, seconds

    def _activate(self) -> None:
        pass

    def _infer(self, feed):
        time.sleep(self.seconds)
        return self.inner.infer(feed)


def test_session_records_and_the_crop_box_follows_the_subject(tmp_path, golden_export, clip):
    path, xs = clip
    out = tmp_path / "session.mp4"
    options = LiveOptions(camera=str(path), window=False, output=out)
    report = LiveSession(_animator(golden_export), [sample_face_path()], options, log=lambda m: None).run()
    assert report.reason == "camera stream ended"
    assert report.output == out and out.is_file()
    frames = list(iter_frames(out))
    # Timed: the file holds each result as long as it was shown, and lasts as long as the session.
    assert len(frames) == report.recorded_frames >= report.shown > 0
    assert abs(len(frames) / FPS - report.seconds) <= 2 / FPS
    assert frames[0].shape == (360, 480 + 360, 3)  # camera panel 640x480 scaled to 360 high | portrait
    assert report.reference_frame is not None and report.reference_frame < 10  # calibrated without a key
    # The portrait panel: still until calibrated, then it follows the subject sliding across the room.
    portraits = [f[:, 480:].astype(np.float32) for f in frames]
    animated = [p for p in portraits if np.abs(p - portraits[0]).mean() > 10]
    assert len(animated) >= len(portraits) // 2, "the portrait stayed still after calibration"
    assert np.abs(animated[-1] - animated[0]).mean() > 5, "the portrait does not follow the camera"
    # The box centre tracks the subject's centre (x + 100) across the frame, smoothed over the frames the
    # framing stage processed: it trails the subject by more when frames were dropped (a loaded machine),
    # so the reference is the same smoothing of the subject's true centre over those frames.
    centres = {i: x + s / 2 for i, x, _, s in report.boxes}
    smoothed, expected = None, {}
    for i in sorted(centres):
        truth = xs[i] + 100
        smoothed = truth if smoothed is None else options.smoothing * smoothed + (1 - options.smoothing) * truth
        expected[i] = smoothed
    errors = [abs(centres[i] - expected[i]) for i in centres if i >= 5]
    assert np.median(errors) < 6, errors  # ~1 px measured
    first = np.mean([centres[i] for i in sorted(centres)[:5]])
    last = np.mean([centres[i] for i in sorted(centres)[-5:]])
    assert last - first > 250


def test_no_crop_uses_the_centre_square(tmp_path, golden_export, clip):
    path, _ = clip
    options = LiveOptions(camera=str(path), window=False, crop=False, max_frames=5)
    report = LiveSession(_animator(golden_export), [sample_face_path()], options, log=lambda m: None).run()
    assert {(x, y, s) for _, x, y, s in report.boxes} == {(80, 0, 480)}
    assert report.reference_frame == 2  # the third frame: calibrate_frames = 3


class FlakyCamera:
    """A 'camera' backed by a real video file that delivers frames in real time, then stops delivering
    (cable pulled) after ``fail_after`` frames; the next opens fail ``refuse`` times, then it works again."""

    state = {"opens": 0}

    def __init__(self, path: Path, fail_after: int | None, refuse: int) -> None:
        FlakyCamera.state["opens"] += 1
        self.opened = FlakyCamera.state["opens"] == 1 or FlakyCamera.state["opens"] > 1 + refuse
        self.cap = cv2.VideoCapture(str(path)) if self.opened else None
        self.fail_after = fail_after if FlakyCamera.state["opens"] == 1 else None
        self.reads = 0

    def isOpened(self):
        return self.opened

    def set(self, *args):
        return True

    def get(self, prop):
        return FPS if prop == cv2.CAP_PROP_FPS else 0

    def read(self):
        time.sleep(1 / FPS)
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            return False, None
        ok, frame = self.cap.read()
        if not ok:  # loop the file: a camera never ends
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        return ok, frame

    def release(self):
        if self.cap is not None:
            self.cap.release()


def test_camera_lost_mid_session_reconnects_without_crashing(golden_export, clip):
    path, _ = clip
    FlakyCamera.state["opens"] = 0
    opener = lambda target: FlakyCamera(path, fail_after=15, refuse=2)  # noqa: E731
    options = LiveOptions(camera="0", window=False, max_seconds=6.0)
    session = LiveSession(_animator(golden_export), [sample_face_path()], options, camera_opener=opener,
                          log=lambda m: None)
    session.capture.reconnect_interval = 0.3
    # Watch the camera status while the session runs (after teardown it is "stopped" whatever happened).
    statuses: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            status = session.capture.status
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = session.run()
    finally:
        done.set()
        watcher.join(timeout=5)
    assert report.reason == "time limit"
    # Lost once, back after the reconnect, and still running when the time limit stopped the session.
    assert [s for s in statuses if s != "stopped"] == ["running", "lost", "running"], statuses
    assert report.camera_status == "stopped"
    assert report.reconnects == 3  # two refused reopen attempts, then success
    assert FlakyCamera.state["opens"] == 4
    assert report.captured > 15 + 10  # frames arrived again after the reconnect


def test_slow_backend_drops_frames_instead_of_queueing(golden_export, tmp_path):
    path = tmp_path / "long.mp4"
    _moving_subject_clip(path, 100)  # 4 s at 25 fps
    options = LiveOptions(camera=str(path), window=False, crop=False)
    report = LiveSession(_animator(golden_export, slow_seconds=0.15), [sample_face_path()], options,
                         log=lambda m: None).run()
    assert report.dropped_capture + report.dropped_framing > 30  # most frames are skipped, not queued
    lat = np.array(report.latencies_ms[3:])  # after calibration, every output waits ~150 ms in the backend
    assert len(lat) > 10
    # Bounded: a frame is at most one inference old when picked up, so latency stays near 1-2 inference
    # times. A queue would grow by ~110 ms per output (150 ms work vs 40 ms between frames). The bounds are in
    # this run's own stage times (the 150 ms of the slow backend plus the real work, whatever the machine's speed).
    ms = report.stage_ms
    assert lat.max() < 2 * ms["inference"] + ms["framing"] + 250, (lat, ms)
    thirds = np.array_split(lat, 3)
    assert thirds[2].mean() < thirds[0].mean() + 100, [t.mean() for t in thirds]


def test_recording_of_a_slow_session_lasts_as_long_as_the_session(golden_export, tmp_path):
    # 0.2 s per result: ~5 results a second from a 25 fps camera. Untimed, the file would be a time-lapse
    # (one file frame per result: a 3 s session in ~0.6 s); each result must stay on screen in the file
    # for as long as it was shown, and the file must last as long as the session.
    path = tmp_path / "long.mp4"
    _moving_subject_clip(path, 150)  # 6 s at 25 fps, more than the session
    out = tmp_path / "slow.mp4"
    options = LiveOptions(camera=str(path), window=False, crop=False, output=out, max_seconds=3.0)
    report = LiveSession(_animator(golden_export, slow_seconds=0.2), [sample_face_path()], options,
                         log=lambda m: None).run()
    assert report.reason == "time limit" and report.output == out
    assert 2.9 < report.seconds < 4.0
    frames = list(iter_frames(out))
    assert len(frames) == report.recorded_frames
    assert abs(len(frames) / FPS - report.seconds) <= 2 / FPS, (len(frames), report.seconds)
    assert len(frames) > 3 * report.shown  # results were repeated while they were on screen
    # Runs of (nearly) identical frames: one per result shown (a result differs from the next in its overlay).
    changes = sum(np.abs(a.astype(np.int16) - b).mean() > 0.5 for a, b in zip(frames, frames[1:]))
    assert report.shown - 3 <= changes + 1 <= report.shown, (changes, report.shown)


def test_source_video_uses_its_first_frame(golden_export, clip):
    path, _ = clip
    animator = _animator(golden_export)
    session = LiveSession(animator, [path], LiveOptions(camera=str(path), window=False), log=lambda m: None)
    session.capture.cap.release()
    # the first frame, framed as every portrait is: around the face (200 px at x=40, y=120 of the frame)
    from fomm_deploy.runtime.media.framing import frame_portrait

    reference = _animator(golden_export)
    reference.set_source(frame_portrait(next(iter_frames(path)), source=path).image)
    assert np.array_equal(animator.source_uint8(), reference.source_uint8())
    ((x, y, side),) = session.portrait_boxes
    assert x < 140 < x + side and y < 220 < y + side and side < 480


def test_framer_refuses_a_crop_scale_that_is_not_positive():
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="--crop-scale must be greater than 0"):
            FaceFramer(scale=scale)
    # A tiny positive scale never gives an empty crop.
    framer = FaceFramer(scale=1e-6, smoothing=0)
    framer._box = np.array([100.0, 100.0, 1e-4])
    x, y, side = framer.box(np.zeros((240, 320, 3), np.uint8))[0]
    assert side >= 8 and framer.cut(np.zeros((240, 320, 3), np.uint8), (x, y, side)).shape == (side, side, 3)


def test_keys_switch_portraits_and_reset(golden_export, clip, tmp_path):
    folder = tmp_path / "portraits"
    folder.mkdir()
    face = np.rint(sample_face() * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "a.png"), face[..., ::-1])
    cv2.imwrite(str(folder / "b.png"), face[:, ::-1, ::-1])  # mirrored: a different portrait
    cv2.imwrite(str(folder / "c.jpg"), face[::-1, :, ::-1])  # upside down: three, so next != previous
    (folder / "notes.txt").write_text("not a portrait")
    portraits = list_portraits(folder)
    assert [p.name for p in portraits] == ["a.png", "b.png", "c.jpg"]
    path, _ = clip
    animator = _animator(golden_export)
    session = LiveSession(animator, portraits, LiveOptions(camera=str(path), window=False), log=lambda m: None)
    before = animator.source_uint8().copy()
    assert session.handle_key(ord("n")) and session.handle_key(ord("r")) and session.handle_key(ord("a"))
    animator.set_reference(face)  # calibrated
    session.apply_commands()
    assert session.portrait_index == 1 and not np.array_equal(before, animator.source_uint8())
    assert animator.has_reference is False and animator.relative is False
    assert session._reset_framer.is_set()  # the framing thread forgets the old face box too
    assert session.handle_key(ord("p"))
    session.apply_commands()
    assert session.portrait_index == 0 and np.array_equal(before, animator.source_uint8())
    assert session.handle_key(ord("p"))  # wraps around
    session.apply_commands()
    assert session.portrait_index == 2
    assert session.handle_key(ord("b")) and session.options.show_box is False
    assert session.handle_key(ord("o")) and session.options.overlay is False
    assert session.capture.mirror() is False
    assert session.handle_key(ord("m")) and session.capture.mirror() is True  # the capture thread sees it
    assert session.handle_key(ord("x"))  # no action, keeps running
    assert session.handle_key(ord("q")) is False
    assert session.handle_key(27) is False  # Esc
    session.capture.cap.release()


def test_preview_box_overlay_and_colour_order(golden_export, clip):
    path, _ = clip
    session = LiveSession(_animator(golden_export), [sample_face_path()], LiveOptions(camera=str(path), window=False),
                          log=lambda m: None)
    session.capture.cap.release()
    camera = np.full((CAM_H, CAM_W, 3), 100, np.uint8)  # BGR
    portrait = np.zeros((64, 64, 3), np.uint8)
    portrait[..., 0] = 255  # pure red, RGB
    framed = Framed(Captured(0, time.perf_counter(), camera), (100, 60, 300), True, 3, None)
    result = Result(framed, portrait, time.perf_counter(), calibrated=False)

    canvas = session.compose(result)  # box and overlay on
    assert canvas.shape == (360, 480 + 360, 3) and canvas.dtype == np.uint8
    assert (canvas[:, 480:, 2] > 250).all() and (canvas[:, 480:, :2] < 5).all()  # red in BGR: the last channel
    session.options.show_box = session.options.overlay = False
    plain = session.compose(result)
    assert (plain[:, :480] == 100).all()  # nothing drawn on the camera panel
    session.options.show_box = True
    boxed = session.compose(result)
    left_edge = boxed[150, 70:80]  # the box's left side: x = 100 camera px = 75 preview px
    assert left_edge[:, 1].max() > 150 and left_edge[:, 2].min() < 50  # green, not orange: a face was found
    assert (boxed[150, 200:280] == 100).all()  # inside the box: untouched
    assert (canvas[10:40, 8:200] != plain[10:40, 8:200]).any()  # the overlay's first line

    lines = session.overlay_lines(result)
    assert "look straight ahead: calibrating..." in lines and not any("CAMERA LOST" in line for line in lines)
    session.capture.status = "lost"
    assert any("CAMERA LOST" in line for line in session.overlay_lines(result))


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not a portrait")
    with pytest.raises(InputError, match="holds no image or video"):
        list_portraits(tmp_path)


def test_cli_source_folder_of_images_and_videos(golden_export, clip, tmp_path):
    from tests import media_corpus as mc

    folder = mc.mixed_portrait_folder(tmp_path / "portraits")
    res = _live("--source", folder, "--onnx", golden_export, "--camera", clip[0], "--no-window", "--max-frames", "4",
                "--keys", "2:2", "--out", tmp_path / "o.mp4")
    assert res.returncode == 0, res.stderr
    assert "portrait 2 of 2: b.mp4" in res.stderr  # two portraits, the video second
    assert "no face found" not in res.stderr  # b.mp4's portrait is its first frame, the face


def test_cli_source_folder_without_portraits(golden_export, clip, tmp_path):
    folder = tmp_path / "portraits"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a portrait")
    res = _live("--source", folder, "--onnx", golden_export, "--camera", clip[0], "--no-window", "--out",
                tmp_path / "o.mp4")
    _one_line_error(res, f"--source folder {folder} holds no image or video")


class _Exported:
    def __init__(self, precisions: set[str]) -> None:
        self.precisions = precisions

    def has_precision(self, precision: str) -> bool:
        return precision in self.precisions


def test_choose_backend(monkeypatch):
    def pick(*args):
        return live.choose_backend(*args)[:2]

    monkeypatch.setattr(live, "tensorrt_missing", lambda: [])  # TensorRT present
    assert pick("auto", _Exported({"fp32", "fp16"})) == ("tensorrt", "fp16")
    assert pick("auto", _Exported({"fp32", "fp16", "int8"})) == ("tensorrt", "fp16")
    assert pick("auto", _Exported({"fp32"})) == ("onnxruntime", "fp32")  # no fp16 graphs
    assert pick("onnxruntime", _Exported({"fp32", "fp16"})) == ("onnxruntime", "fp32")
    assert pick("tensorrt", _Exported({"fp32"})) == ("tensorrt", "fp16")
    assert live.choose_backend("onnxruntime", _Exported({"int8"}))[2] == "as asked"
    monkeypatch.setattr(live, "tensorrt_missing", lambda: ["the 'tensorrt' Python package"])
    assert pick("auto", _Exported({"fp32", "fp16"})) == ("onnxruntime", "fp32")
    # On a CPU, the int8 graphs when the export has them, and the reason is given.
    backend, precision, why = live.choose_backend("auto", _Exported({"fp32", "fp16", "int8"}))
    assert (backend, precision) == ("onnxruntime", "int8")
    assert "no TensorRT" in why and "int8" in why and "twice as fast" in why
    assert pick("auto", _Exported({"fp32", "int8"}), ("cpu",)) == ("onnxruntime", "int8")
    assert pick("auto", _Exported({"fp32", "int8"}), ("cuda", "cpu")) == ("onnxruntime", "fp32")  # not on a GPU


def test_cli_options_reach_the_animator_and_the_session(golden_export, monkeypatch, tmp_path):
    seen = {}
    real_open_animator = graphs.open_animator

    def open_animator(*args, **kwargs):
        seen["animator"] = kwargs
        return real_open_animator(*args, **kwargs)

    class FakeSession:
        def __init__(self, animator, portraits, options, **kwargs):
            seen["portraits"], seen["options"] = portraits, options

        def run(self):
            return LiveReport(reason="test")

    monkeypatch.setattr(graphs, "open_animator", open_animator)
    monkeypatch.setattr(live, "LiveSession", FakeSession)
    live.main.main(["--source", str(sample_face_path()), "--onnx", str(golden_export), "--camera", "clip.mp4",
                    "--absolute", "--no-adapt-scale", "--no-crop", "--crop-scale", "1.5", "--smoothing", "0.2",
                    "--mirror", "--loop", "--no-window", "--no-overlay", "--max-frames", "4", "--max-seconds", "2",
                    "--output", str(tmp_path / "o.mp4"), "--ghost", "--output-size", "320x240", "--keys", "3:g,5:1"],
                   standalone_mode=False)
    assert seen["animator"]["relative"] is False and seen["animator"]["adapt_scale"] is False
    assert seen["portraits"] == [sample_face_path()]
    assert seen["options"] == LiveOptions(camera="clip.mp4", loop=True, crop=False, crop_scale=1.5, smoothing=0.2,
                                          mirror=True, window=False, overlay=False, output=tmp_path / "o.mp4",
                                          max_frames=4, max_seconds=2.0, ghost=True, output_size=(320, 240),
                                          keys=((3, ord("g")), (5, ord("1"))))
    (tmp_path / "o.mp4").write_bytes(b"an earlier recording")
    live.main.main(["--source", str(sample_face_path()), "--onnx", str(golden_export), "--no-window",
                    "--output", str(tmp_path / "o.mp4"), "--force"], standalone_mode=False)
    assert seen["animator"]["relative"] is True and seen["animator"]["adapt_scale"] is True
    assert seen["options"] == LiveOptions(window=False, output=tmp_path / "o.mp4")


def test_error_types(tmp_path):
    with pytest.raises(CameraError, match="no such camera or video file"):
        open_camera(str(tmp_path / "missing.mp4"))
    with pytest.raises(CameraError, match="cannot open camera 7"):
        open_camera("7")
    if __import__("importlib").util.find_spec("pyvirtualcam") is None:
        with pytest.raises(BackendUnavailableError, match="needs pyvirtualcam"):
            require_pyvirtualcam()


def _live(*args, env=None, cwd=None):
    script = Path(sys.executable).parent / "fomm-live"
    return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def _one_line_error(res, message):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    # what was chosen and how the portrait was framed (said before the camera opens) are not the error
    lines = [line for line in res.stderr.splitlines()
             if line.strip() and not line.startswith(("backend:", "source crop "))]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr


def test_cli_camera_that_fails_to_open_lists_what_was_tried(golden_export, tmp_path):
    res = _live("--source", sample_face_path(), "--onnx", golden_export, "--camera", "7", "--no-window",
                "--output", tmp_path / "o.mp4")
    _one_line_error(res, "cannot open camera 7 (tried OpenCV VideoCapture(7);")


def test_cli_missing_video_camera(golden_export, tmp_path):
    res = _live("--source", sample_face_path(), "--onnx", golden_export, "--camera", tmp_path / "x.mp4",
                "--no-window", "--output", tmp_path / "o.mp4")
    _one_line_error(res, "no such camera or video file")


def test_cli_unreadable_portrait_fails_before_the_camera(golden_export, tmp_path):
    bad = tmp_path / "portrait.jpg"
    bad.write_text("not an image")
    res = _live("--source", bad, "--onnx", golden_export, "--camera", "7", "--no-window",
                "--output", tmp_path / "o.mp4")
    _one_line_error(res, "is not an image")


def test_cli_refuses_bad_options_before_the_camera_opens(golden_export, tmp_path):
    # In process (a subprocess per case costs seconds); the same one-line errors as the command prints.
    # Camera 7 does not open: each error below must come first.
    def error(*args):
        with pytest.raises(click.ClickException) as info:  # user_errors' one line, "Error: ..." when printed
            live.main.main(["--source", str(sample_face_path()), "--onnx", str(golden_export), "--camera", "7",
                            *map(str, args)], standalone_mode=False)
        assert "\n" not in info.value.message
        return info.value.message

    out = tmp_path / "o.mp4"
    for scale in ("0", "-1"):
        assert "--crop-scale must be greater than 0" in error("--crop-scale", scale, "--no-window", "--output", out)
    for seconds in ("-1", "0"):
        assert "--max-seconds must be greater than 0" in error("--max-seconds", seconds, "--no-window", "--output", out)
    assert "add --out FILE.mp4 or --virtual-cam" in error("--no-window")
    assert "must end in .mp4" in error("--no-window", "--output", tmp_path / "o.avi")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "is a file, not a folder" in error("--no-window", "--output", blocker / "sub" / "o.mp4")
    (tmp_path / "dir.mp4").mkdir()
    assert "is a folder" in error("--no-window", "--output", tmp_path / "dir.mp4")
    out.write_bytes(b"an earlier recording")
    assert "already exists; pass --force" in error("--no-window", "--output", out)
    assert out.read_bytes() == b"an earlier recording"
    # A video standing in for the camera is never the recording, --force or not, however it is spelled.
    cam = tmp_path / "cam.mp4"
    cam.write_bytes(b"the input")
    for spelled in (cam, tmp_path / "." / "cam.mp4"):
        for force in ((), ("--force",)):
            assert "is the --camera input" in error("--camera", cam, "--no-window", "--output", spelled, *force)
    (tmp_path / "link.mp4").symlink_to(cam)
    assert "is the --camera input" in error("--camera", cam, "--no-window", "--output", tmp_path / "link.mp4", "--force")
    assert cam.read_bytes() == b"the input"


def test_cli_source_video_and_force_replaces_an_old_recording(golden_export, clip, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"an earlier recording")
    res = _live("--source", clip[0], "--onnx", golden_export, "--camera", clip[0], "--no-window",
                "--max-frames", "5", "--output", out, "--force")
    assert res.returncode == 0, res.stderr
    assert "5 frames shown" in res.stdout and "recorded" in res.stdout
    assert len(list(iter_frames(out))) >= 5


def test_cli_warns_about_a_portrait_without_a_face(golden_export, clip, tmp_path):
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((200, 200, 3), 90, np.uint8))
    res = _live("--source", wall, "--onnx", golden_export, "--camera", clip[0], "--no-window", "--max-frames", "2",
                "--out", tmp_path / "o.mp4")
    assert res.returncode == 0, res.stderr
    assert f"warning: no face found in {wall}" in res.stderr
    res = _live("--source", sample_face_path(), "--onnx", golden_export, "--camera", clip[0], "--no-window",
                "--max-frames", "2", "--out", tmp_path / "p.mp4")
    assert res.returncode == 0 and "no face found" not in res.stderr, res.stderr


def test_cli_without_display_asks_for_no_window(golden_export, clip):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = _live("--source", sample_face_path(), "--onnx", golden_export, "--camera", clip[0], env=env)
    _one_line_error(res, "use --no-window")


def test_cli_virtual_cam_without_pyvirtualcam(golden_export, clip):
    if __import__("importlib").util.find_spec("pyvirtualcam") is not None:
        pytest.skip("pyvirtualcam is installed")
    # Camera 7 does not open: the missing package must be reported first, before the camera is tried.
    res = _live("--source", sample_face_path(), "--onnx", golden_export, "--camera", "7", "--no-window",
                "--virtual-cam")
    _one_line_error(res, "needs pyvirtualcam")


def test_cli_headless_run_imports_no_torch(golden_export, clip, tmp_path):
    code = (
        "import sys\n"
        "from fomm_deploy.runtime.live import main\n"
        f"main.main(['--source', {str(sample_face_path())!r}, '--onnx', {str(golden_export)!r}, '--camera',"
        f" {str(clip[0])!r}, '--no-window', '--max-frames', '10', '--output', {str(tmp_path / 'r.mp4')!r}],"
        " standalone_mode=False)\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported'\n"
        "print('no torch')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "no torch" in res.stdout and "10 frames shown" in res.stdout
    assert "backend: onnxruntime int8, graphs frame_step (chosen automatically: no TensorRT here;" in res.stderr
    assert (tmp_path / "r.mp4").is_file()


def test_live_script_mode_runs(golden_export, clip, tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "runtime" / "live.py"), "--source", str(sample_face_path()),
                          "--onnx", str(golden_export), "--camera", str(clip[0]), "--no-window", "--max-frames", "3",
                          "--output", "r.mp4"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3 frames shown" in res.stdout


def test_cli_frames_the_astronaut_around_its_face_as_in_every_command(golden_export, tmp_path):
    """--source astronaut.png is framed as fomm-animate and fomm-serve frame it (tests/runtime/test_animate_cli.py,
    test_serve.py), not squeezed whole into the model's frame. The camera shows a wall (no face), so the
    session never calibrates and records the portrait as the model was given it."""
    from tests.runtime.media.test_framing import ASTRONAUT, ASTRONAUT_MESSAGE, portrait_distances

    wall = tmp_path / "wall.mp4"
    with VideoWriter(wall, FPS, (320, 240)) as w:
        for _ in range(10):
            w.write(np.full((240, 320, 3), 90, np.uint8))
    res = _live("--source", ASTRONAUT, "--onnx", golden_export, "--camera", wall, "--no-window", "--max-frames", "3",
                "--out", tmp_path / "o.mp4", "--out-size", "portrait")
    assert res.returncode == 0, res.stderr
    assert ASTRONAUT_MESSAGE in res.stderr.splitlines(), res.stderr
    frames = list(iter_frames(tmp_path / "o.mp4"))
    assert frames and frames[0].shape == (128, 128, 3)
    to_framed, to_squeezed = portrait_distances(frames[0])
    assert to_framed < 8 and to_squeezed > 20, (to_framed, to_squeezed)  # H.264 costs ~4 here
    # --crop takes fomm-animate's choices: centre is the centre square, here the whole (square) photo
    res = _live("--source", ASTRONAUT, "--onnx", golden_export, "--camera", wall, "--no-window", "--max-frames", "2",
                "--out", tmp_path / "c.mp4", "--out-size", "portrait", "--crop", "centre")
    assert res.returncode == 0 and "source crop astronaut.png: x=0 y=0 side=512 (centre)" in res.stderr.splitlines()
    to_framed, to_squeezed = portrait_distances(next(iter(iter_frames(tmp_path / "c.mp4"))))
    assert to_squeezed < 8 and to_framed > 20, (to_framed, to_squeezed)
