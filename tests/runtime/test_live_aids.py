"""Live mode's alignment aids and outputs (issue #15): the ghost overlay, zooming and moving the crop by
hand, number keys, the best-matching portrait, portrait-alone recordings, and the shared face detector.

Headless, as the other live tests: generated video files stand in for the camera, and keys are pressed
through the session's ``keys`` script (``--keys`` on the command line), the same path as real key presses.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.animator import Animator
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.media.framing import FaceDetector
from fomm_deploy.runtime.graphs import load_exported
from fomm_deploy.runtime.media.preprocess import list_portraits
from fomm_deploy.runtime.media.samples import sample_face, sample_face_path
from fomm_deploy.runtime.media.video import VideoWriter, iter_frames
from fomm_deploy.runtime.webcam.frames import Captured, Framed, Result
from fomm_deploy.runtime.webcam.framer import FaceFramer
from fomm_deploy.runtime.webcam.keys import parse_key_script
from fomm_deploy.runtime.webcam.preview import letterbox, parse_output_size
from fomm_deploy.runtime.webcam.session import LiveOptions, LiveSession

from .media.test_framing import astronaut, place
from .test_live import CAM_H, CAM_W, FPS, _animator, _live, _moving_subject_clip

FACE = np.rint(sample_face() * 255).astype(np.uint8)  # 256x256 RGB
# Three portraits that look nothing alike to the keypoint detector: upright, mirrored, upside down.
PORTRAITS = {"a.png": FACE, "b.png": FACE[:, ::-1], "c.png": FACE[::-1]}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("aids") / "camera.mp4"
    return path, _moving_subject_clip(path, 40)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("portraits")
    for name, image in PORTRAITS.items():
        cv2.imwrite(str(folder / name), image[..., ::-1])
    return folder


def _still_camera(path: Path, image: np.ndarray, frames: int = 40) -> Path:
    """A camera that sees ``image`` (RGB, square) and nothing else, motionless, for ``frames`` frames."""
    with VideoWriter(path, FPS, (image.shape[1], image.shape[0])) as w:
        for _ in range(frames):
            w.write(image)
    return path


def _session(golden_export, portraits, logs: list | None = None, **options) -> LiveSession:
    return LiveSession(_animator(golden_export), portraits, LiveOptions(window=False, **options),
                       log=(logs.append if logs is not None else lambda m: None))


# -- the ghost ---------------------------------------------------------------------------------------


def test_ghost_blends_the_portrait_into_the_crop_box_of_the_camera_view(golden_export, clip):
    session = _session(golden_export, [sample_face_path()], camera=str(clip[0]), show_box=False, overlay=False)
    session.capture.cap.release()
    camera = np.full((CAM_H, CAM_W, 3), 100, np.uint8)  # BGR grey
    still = np.zeros((64, 64, 3), np.uint8)
    still[..., 0] = 255  # pure red, RGB
    framed = Framed(Captured(0, time.perf_counter(), camera), (100, 60, 300), True, 3, None)
    result = Result(framed, np.zeros((64, 64, 3), np.uint8), time.perf_counter(), True, 0, still)

    assert session.options.ghost is False  # off by default: calibration is automatic
    plain = session.compose(result)
    assert (plain[:, :480] == 100).all()
    assert session.handle_key(ord("g")) and session.options.ghost is True
    ghosted = session.compose(result)
    # The box (100, 60, 300) in camera pixels is (75, 45, 225) in the 360-high preview (x 0.75).
    inside = ghosted[50:265, 80:295].astype(int)
    assert np.abs(inside[..., 2] - (100 + 255) / 2).max() <= 2, "red not blended half and half into the box"
    assert np.abs(inside[..., :2] - 50).max() <= 2
    outside = np.ones(ghosted.shape[:2], bool)
    outside[43:272, 73:302] = False  # the box, with a pixel of resampling around it
    outside[:, 480:] = False  # the portrait panel
    assert (ghosted[outside] == plain[outside]).all(), "the ghost reached outside the crop box"
    assert np.array_equal(ghosted[:, 480:], plain[:, 480:])  # the portrait panel is not touched
    assert session.handle_key(ord("g")) and np.array_equal(session.compose(result), plain)


# -- zooming and moving the crop by hand ----------------------------------------------------------------


def test_zoom_and_move_keys_change_the_crop_box_and_c_undoes_them(golden_export, clip):
    # Centre square 480 at (80, 0); w zooms in by 1.1 (side 436), l moves right by 0.05 of the side (24 px).
    session = _session(golden_export, [sample_face_path()], camera=str(clip[0]), crop=False, max_frames=24,
                       keys=parse_key_script("3:wl,12:c"))
    report = session.run()
    boxes = [b[1:] for b in report.boxes]
    assert boxes[0] == (80, 0, 480)
    assert (126, 22, 436) in boxes, sorted(set(boxes))
    assert boxes[-1] == (80, 0, 480)  # c: back to the automatic box
    assert set(boxes) == {(80, 0, 480), (126, 22, 436)}


def test_hand_zoom_and_move_compose_with_face_following(clip):
    frames = list(iter_frames(clip[0]))  # RGB; the framer takes BGR
    first, last = frames[0][..., ::-1], frames[-1][..., ::-1]
    auto_first, found = FaceFramer(smoothing=0).box(first)
    auto_last, found_last = FaceFramer(smoothing=0).box(last)
    assert found and found_last and auto_last[0] - auto_first[0] > 250  # the face moved right

    framer = FaceFramer(smoothing=0)
    framer.adjust.zoom_by(2)  # in twice: side / 1.21
    framer.adjust.move(-1, 2)  # one step left, two down

    def expected(auto):
        x, y, s = auto
        side = s / 1.21
        return x + s / 2 - 0.05 * s - side / 2, y + s / 2 + 0.10 * s - side / 2, side

    for frame, auto in ((first, auto_first), (last, auto_last)):
        framer.reset()  # a fresh search for the face; the hand adjustment stays
        box, _ = framer.box(frame)
        assert np.allclose(box, expected(auto), atol=1.01), (box, expected(auto))
    assert not framer.adjust.is_identity
    framer.adjust.reset()
    framer.reset()
    assert framer.box(last)[0] == auto_last


# -- picking portraits ------------------------------------------------------------------------------


def _expected_output(golden_export, portrait: np.ndarray, camera_frame: np.ndarray) -> np.ndarray:
    """What the session must show for ``portrait`` once calibrated on a motionless camera: the first frame
    is the reference, every frame is the same, so the animation of that one frame."""
    animator = _animator(golden_export)
    animator.set_source(portrait.astype(np.float32) / 255)
    model = animator.prepare(camera_frame)
    animator.set_reference(model, prepared=True)
    return animator.animate_prepared(model[None])[0].astype(np.float32)


def test_number_keys_switch_the_portrait_and_the_output(golden_export, folder, tmp_path):
    camera = _still_camera(tmp_path / "still.mp4", FACE)
    out = tmp_path / "portrait.mp4"
    logs: list[str] = []
    # source_crop centre: the portraits as they are (256x256), so that what the camera sees is a portrait exactly
    session = _session(golden_export, list_portraits(folder), logs, camera=str(camera), crop=False, output=out,
                       output_size="portrait", keys=parse_key_script("10:3,12:7"), source_crop="centre")
    report = session.run()
    assert report.reason == "camera stream ended"
    shown = report.portraits_shown
    assert shown[:10] == [0] * 10 and shown[-5:] == [2] * 5 and set(shown) == {0, 2}, shown
    assert "portrait 3 of 3: c.png" in logs and "no portrait 7: --source has 3" in logs
    # The recording (the portrait alone) shows portrait a's animation, then portrait c's.
    cam_frame = next(iter_frames(camera))
    want_a = _expected_output(golden_export, PORTRAITS["a.png"], cam_frame)
    want_c = _expected_output(golden_export, PORTRAITS["c.png"], cam_frame)
    assert np.abs(want_a - want_c).mean() > 20  # the two portraits' animations are far apart (27 measured)
    frames = [f.astype(np.float32) for f in iter_frames(out)]
    to_a = [np.abs(f - want_a).mean() for f in frames]
    to_c = [np.abs(f - want_c).mean() for f in frames]
    # "Close": H.264 (crf 18) alone costs ~6 on the random-weights model's grainy output (measured).
    close = 10
    assert min(to_a[:8]) < close, to_a  # calibrated on portrait a before the key
    switch = next(i for i, d in enumerate(to_c) if d < close)
    assert all(d > 2 * close for d in to_c[:switch]), to_c
    assert all(d < close for d in to_c[switch:]) and switch < len(frames) - 8, to_c  # portrait c, to the end


@pytest.mark.parametrize("shows", ["b.png", "c.png"])
def test_best_match_picks_the_portrait_the_camera_shows(golden_export, folder, tmp_path, shows):
    camera = _still_camera(tmp_path / "still.mp4", PORTRAITS[shows], frames=25)
    logs: list[str] = []
    # the camera's centre square shows one portrait as it is; source_crop centre keeps the portraits so too (framed
    # around the face, each would be a different zoom of it, and the upside-down one a false face)
    session = _session(golden_export, list_portraits(folder), logs, camera=str(camera), crop=False,
                       keys=parse_key_script("5:f"), output=tmp_path / "o.mp4", source_crop="centre")
    report = session.run()
    index = list(PORTRAITS).index(shows)
    assert report.best_matches == [index]
    assert report.portraits_shown[0] == 0 and report.portraits_shown[-1] == index
    said = [m for m in logs if "best match" in m]
    assert len(said) == 1 and said[0].startswith(f"portrait {index + 1} of 3: {shows} (best match for your pose: "
                                                 "distance "), logs
    assert "next closest" in said[0]


# -- portrait-alone recordings ----------------------------------------------------------------------------


def test_portrait_alone_recording_has_the_chosen_size_and_lasts_the_session(golden_export, tmp_path):
    path = tmp_path / "long.mp4"
    _moving_subject_clip(path, 150)  # 6 s, more than the session
    out = tmp_path / "webcam-sized.mp4"
    # A slow backend (0.1 s a frame): each result is held in the file while it is on screen.
    session = LiveSession(_animator(golden_export, slow_seconds=0.1), [sample_face_path()],
                          LiveOptions(camera=str(path), window=False, crop=False, output=out, output_size=(320, 240),
                                      max_seconds=2.5), log=lambda m: None)
    report = session.run()
    assert report.reason == "time limit" and report.output == out and report.recorded_size == (320, 240)
    frames = list(iter_frames(out))
    assert len(frames) == report.recorded_frames
    assert frames[0].shape == (240, 320, 3)
    assert abs(len(frames) / FPS - report.seconds) <= 2 / FPS, (len(frames), report.seconds)
    assert len(frames) > 2 * report.shown  # results were repeated while they were on screen
    # Letterboxed: the 128x128 portrait scaled to 240x240 in the middle, black bars of 40 px either side.
    for f in frames:
        assert f[:, :36].max() < 12 and f[:, 284:].max() < 12
        assert f[:, 44:276].mean() > 20
    first = letterbox(session.animator.source_uint8(), (320, 240)).astype(np.float32)
    assert np.abs(frames[0].astype(np.float32) - first).mean() < 3  # the still portrait before calibration


def test_letterbox_and_output_size_parsing():
    image = np.full((64, 64, 3), 200, np.uint8)
    wide = letterbox(image, (1280, 720))
    assert wide.shape == (720, 1280, 3) and (wide[:, :280] == 0).all() and (wide[:, 1000:] == 0).all()
    assert (wide[:, 280:1000] == 200).all()
    tall = letterbox(image, (64, 128))
    assert (tall[:32] == 0).all() and (tall[32:96] == 200).all() and (tall[96:] == 0).all()
    assert parse_output_size("1280x720") == (1280, 720) and parse_output_size("Portrait") == "portrait"
    assert parse_output_size("preview") == "preview"
    for bad, why in (("1281x720", "even"), ("8x8", "even numbers from 16"), ("big", "give preview, portrait"),
                     ("1280*720", "WIDTHxHEIGHT")):
        with pytest.raises(InputError, match=why):
            parse_output_size(bad)


def test_key_script_parsing():
    assert parse_key_script("20:g,40:ww, 5:esc") == ((5, 27), (20, ord("g")), (40, ord("w")), (40, ord("w")))
    for bad, why in (("g", "is not FRAME:KEYS"), ("0:g", "is not FRAME:KEYS"), ("3:", "is not FRAME:KEYS"),
                     ("x:g", "is not FRAME:KEYS"), ("3:Z", "'Z' in '3:Z' is no key")):
        with pytest.raises(InputError, match=why):
            parse_key_script(bad)


def test_cli_portrait_alone_at_its_own_size_with_scripted_keys(golden_export, folder, tmp_path):
    camera = _still_camera(tmp_path / "still.mp4", PORTRAITS["b.png"], frames=20)
    out = tmp_path / "p.mp4"
    res = _live("--source", folder, "--onnx", golden_export, "--camera", camera, "--no-window", "--no-crop",
                "--out-size", "portrait", "--out", out, "--keys", "3:3,6:f")
    assert res.returncode == 0, res.stderr
    assert "portrait 3 of 3: c.png" in res.stderr
    assert "portrait 2 of 3: b.png (best match for your pose" in res.stderr
    assert f"recorded {out}: 128x128," in res.stdout
    frames = list(iter_frames(out))
    assert frames[0].shape == (128, 128, 3) and len(frames) >= 10


def test_cli_refuses_bad_output_sizes_and_key_scripts(golden_export, tmp_path):
    import click

    from fomm_deploy.runtime import live

    def error(*args):
        with pytest.raises(click.ClickException) as info:
            live.main.main(["--source", str(sample_face_path()), "--onnx", str(golden_export), "--camera", "7",
                            *map(str, args)], standalone_mode=False)
        assert "\n" not in info.value.message
        return info.value.message

    out = ("--no-window", "--output", tmp_path / "o.mp4")
    assert "even numbers" in error(*out, "--output-size", "641x480")
    assert "give preview, portrait or WIDTHxHEIGHT" in error(*out, "--output-size", "huge")
    assert "is for --out and --virtual-cam" in error("--output-size", "portrait")  # checked before the display
    assert "is not FRAME:KEYS" in error(*out, "--keys", "g")
    assert "is no key of fomm-live" in error(*out, "--keys", "4:Z")
    assert not (tmp_path / "o.mp4").exists()


# -- the face detector ---------------------------------------------------------------------------------


def test_live_framing_uses_the_shared_detector_and_finds_a_tilted_head():
    framer = FaceFramer(smoothing=0)
    assert isinstance(framer._tracker.detector, FaceDetector)
    frame, (cx, cy, side) = place(astronaut(), 30.0, 0.8, 400.0, 180.0)  # RGB, head tilted by 30 degrees
    bgr = np.ascontiguousarray(frame[..., ::-1])
    plain = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert len(plain.detectMultiScale(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 1.1, 5, minSize=(20, 20))) == 0
    found = framer.detect(bgr)
    assert found is not None and np.hypot(found[0] - cx, found[1] - cy) < 0.35 * side, (found, (cx, cy, side))


def test_a_failure_in_the_display_loop_publishes_no_recording(golden_export, tmp_path):
    """An error while showing frames (not q, a signal or a limit) aborts the recording: the user's old file
    (replaced only by a complete one) is left as it was, and no temporary file stays behind."""
    path = tmp_path / "cam.mp4"
    _moving_subject_clip(path, 50)
    out = tmp_path / "old recording.mp4"
    out.write_bytes(b"the user's earlier recording")
    session = LiveSession(_animator(golden_export), [sample_face_path()],
                          LiveOptions(camera=str(path), window=False, crop=False, output=out, max_seconds=20),
                          log=lambda m: None)
    compose, calls = session.compose, []

    def failing_compose(result):  # the 6th frame's preview fails, as a broken display or filter would
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("the display failed")
        return compose(result)

    session.compose = failing_compose
    with pytest.raises(RuntimeError, match="the display failed"):
        session.run()
    assert out.read_bytes() == b"the user's earlier recording"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.mp4", "old recording.mp4"]
