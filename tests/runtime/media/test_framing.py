"""Face framing: box maths, paste-back, and the face detector measured on a generated set.

The set: scikit-image's astronaut.png (public domain, NASA; tests/data/astronaut.png) rotated by up to 30
degrees, scaled, moved and partly occluded inside a 16:9 frame, where the true face position is known.
``python tests/runtime/media/test_framing.py`` prints the table that runtime/FRAMING.md shows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.media import framing
from fomm_deploy.runtime.media.framing import ClipTracker, FaceDetector, clip_box, cut, fill_gaps, follow_boxes, paste_back

ASTRONAUT = Path(__file__).resolve().parents[2] / "data" / "astronaut.png"
# The face in astronaut.png (512x512): Haar's frontal square on the upright photo, the ground truth.
FACE_CX, FACE_CY, FACE_SIDE = 224.8, 112.8, 97.6
FRAME_W, FRAME_H = 640, 360


def astronaut() -> np.ndarray:
    """astronaut.png as RGB uint8 (512, 512, 3)."""
    return cv2.imread(str(ASTRONAUT))[..., ::-1].copy()


def place(image: np.ndarray, angle: float, scale: float, cx: float, cy: float, *, size=(FRAME_W, FRAME_H),
          occlude: str | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The photo rotated by ``angle`` degrees (counter-clockwise) about its face, scaled by ``scale``, with
    the face centre at (cx, cy) of a ``size`` frame (grey outside the photo); ``occlude``: a grey block over
    the ``left``/``right`` 30 % or ``bottom`` 35 % of the face. Returns the frame and the true face."""
    m = cv2.getRotationMatrix2D((FACE_CX, FACE_CY), angle, scale)
    m[:, 2] += np.array([cx, cy]) - np.array([FACE_CX, FACE_CY])
    frame = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(96, 104, 112))
    side = FACE_SIDE * scale
    if occlude:
        half = side / 2
        x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
        if occlude == "left":
            x1 = x0 + 0.3 * side
        elif occlude == "right":
            x0 = x1 - 0.3 * side
        else:
            y0 = y1 - 0.35 * side
        cv2.rectangle(frame, (int(x0), int(y0)), (int(x1), int(y1)), (60, 60, 60), thickness=-1)
    return frame, (cx, cy, side)


def still_set(n: int = 120, seed: int = 0):
    """``n`` independent frames: angle in [-30, 30], scale 0.55-1.0 (face 54-98 px), anywhere in the frame, a quarter occluded."""
    rng = np.random.default_rng(seed)
    image = astronaut()
    for i in range(n):
        angle = float(rng.uniform(-30, 30))
        scale = float(rng.uniform(0.55, 1.0))
        margin = FACE_SIDE * scale
        cx = float(rng.uniform(margin, FRAME_W - margin))
        cy = float(rng.uniform(margin, FRAME_H - margin))
        occlude = ("left", "right", "bottom")[i % 3] if i % 4 == 3 else None
        yield (angle, occlude) + place(image, angle, scale, cx, cy, occlude=occlude)


def moving_clip(n: int = 60, seed: int = 1, size=(FRAME_W, FRAME_H), max_angle: float = 30.0, scale: float = 0.7):
    """A head moving smoothly off centre: sways up to ``max_angle`` degrees, drifts and nods."""
    rng = np.random.default_rng(seed)
    image = astronaut()
    phase = rng.uniform(0, 2 * np.pi, 3)
    w, h = size
    for i in range(n):
        t = i / n
        angle = max_angle * np.sin(2 * np.pi * t + phase[0])
        cx = w * (0.68 + 0.06 * np.sin(2 * np.pi * t + phase[1]))
        cy = h * (0.45 + 0.05 * np.sin(4 * np.pi * t + phase[2]))
        s = scale * (1 + 0.08 * np.sin(2 * np.pi * t))
        yield place(image, angle, s, cx, cy, size=size)


def _hit(found, truth) -> bool:
    """A detection is a hit when its centre is within 35 % of the true face side and its size within 35 %."""
    if found is None:
        return False
    err = np.hypot(found[0] - truth[0], found[1] - truth[1]) / truth[2]
    return err < 0.35 and abs(found[2] / truth[2] - 1) < 0.35


# fomm-live's detector: FaceFramer's defaults (runtime/webcam/framer.py), the same FaceDetector at 320 px
# detection width without histogram equalisation; its row's follow box is FaceFramer's smoothed box, and
# "clip box holds face" asks whether that box held the face in every frame (live mode has no clip box).
LIVE = "live: `FaceFramer` (320 px wide, no equalisation)"
DETECTORS = {
    "haar frontal only": dict(angles=(), profile=False),
    "+ profile cascades": dict(angles=(), profile=True),
    "+ rotated copies ±20°, ±35° (default)": {},
    LIVE: dict(detect_width=320, equalize=False),
}


def live_boxes(clip) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """fomm-live's crop box (``FaceFramer`` with its defaults) on each frame of ``clip``, and the centres those
    boxes would have on the true faces (``FaceFramer`` raises the box by ``raise_by`` of the face side)."""
    from fomm_deploy.runtime.webcam.framer import FaceFramer

    framer = FaceFramer()
    boxes = [framer.box(np.ascontiguousarray(frame[..., ::-1]))[0] for frame, _ in clip]  # camera frames are BGR
    return boxes, np.array([[cx, cy - framer.raise_by * side] for _, (cx, cy, side) in clip])


def measure(n_still: int = 120, n_clip: int = 60, only: str | None = None) -> list[dict]:
    """Hit rates and crop jitter for each detector setting (see the module doc); ``only``: the settings whose
    name holds that text."""
    stills = list(still_set(n_still))
    clip = list(moving_clip(n_clip))
    rows = []
    for name, kwargs in DETECTORS.items():
        if only is not None and only not in name:
            continue
        det = FaceDetector(**kwargs)
        start = time.perf_counter()
        hits = {"all": [], "|angle|<=10": [], "|angle|>20": [], "occluded": []}
        for angle, occlude, frame, truth in stills:
            ok = _hit(det.detect(frame), truth)
            hits["all"].append(ok)
            if abs(angle) <= 10:
                hits["|angle|<=10"].append(ok)
            if abs(angle) > 20:
                hits["|angle|>20"].append(ok)
            if occlude:
                hits["occluded"].append(ok)
        ms = 1000 * (time.perf_counter() - start) / len(stills)
        tracker = ClipTracker(det)
        found = [tracker.update(frame) for frame, _ in clip]
        truths = [t for _, t in clip]
        clip_hits = float(np.mean([_hit(f, t) for f, t in zip(found, truths)]))
        filled = fill_gaps(found)
        # Jitter of the following box: frame-to-frame change of (box centre - true face centre), in % of the
        # true face side (0 for a box that moves exactly with the face), raw detections and smoothed.
        jitter_raw = jitter_follow = float("nan")
        if filled[0] is not None:
            err = np.array([[f[0] - t[0], f[1] - t[1]] for f, t in zip(filled, truths)]) / truths[0][2]
            jitter_raw = float(100 * np.linalg.norm(np.diff(err, axis=0), axis=1).std())
            if name == LIVE:
                boxes, true_c = live_boxes(clip)
            else:
                boxes = follow_boxes(found, (FRAME_W, FRAME_H))
                head = [framing.head_box(t) for t in truths]
                true_c = np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in head])
            box_c = np.array([[x + s / 2, y + s / 2] for x, y, s in boxes])
            jitter_follow = float(100 * np.linalg.norm(np.diff(box_c - true_c, axis=0), axis=1).std()
                                  / truths[0][2])
        if name == LIVE:
            holds = all(_inside(t, b) for t, b in zip(truths, live_boxes(clip)[0]))
        else:
            box = clip_box(found, (FRAME_W, FRAME_H))
            holds = box is not None and all(_inside(t, box) for t in truths)
        rows.append(dict(name=name, ms=ms, clip_hits=clip_hits, jitter_raw=jitter_raw, jitter_follow=jitter_follow,
                         clip_box_holds=holds, **{k: float(np.mean(v)) for k, v in hits.items()}))
    return rows


def _inside(face, box) -> bool:
    """The true face square lies inside the crop box."""
    cx, cy, side = face
    x, y, s = box
    return x <= cx - side / 2 and y <= cy - side / 2 and cx + side / 2 <= x + s and cy + side / 2 <= y + s


# ---- box maths --------------------------------------------------------------------------------------------


def test_clip_box_is_the_union_with_margin():
    faces = [(100.0, 100.0, 40.0), None, (140.0, 110.0, 40.0)]
    x, y, s = clip_box(faces, (640, 360))
    heads = [framing.head_box(f) for f in faces if f is not None]
    left, top, right, bottom = framing.union(heads)
    assert (left, top, right, bottom) == (68.0, 64.0, 172.0, 138.0)
    assert s == round(1.2 * (right - left))  # 10 % of the longer side on each side, square
    assert x <= left and y <= top and x + s >= right and y + s >= bottom
    assert abs((x + s / 2) - (left + right) / 2) <= 0.5 and abs((y + s / 2) - (top + bottom) / 2) <= 0.5
    assert clip_box([None, None], (640, 360)) is None


def test_fill_gaps_interpolates_and_holds_the_ends():
    filled = fill_gaps([None, (0.0, 0.0, 10.0), None, (10.0, 20.0, 30.0), None])
    assert filled == [(0.0, 0.0, 10.0), (0.0, 0.0, 10.0), (5.0, 10.0, 20.0), (10.0, 20.0, 30.0), (10.0, 20.0, 30.0)]
    assert fill_gaps([None, None]) == [None, None]


def test_a_false_hit_does_not_grow_the_clip_box():
    faces = [(100.0 + i, 100.0, 40.0) for i in range(9)]
    clean = clip_box(faces, (640, 360))
    faces[4] = (500.0, 300.0, 40.0)  # one detection in the background
    assert framing.reject_outliers(faces)[4] is None and framing.reject_outliers(faces)[3] == faces[3]
    assert clip_box(faces, (640, 360)) == clean


def test_follow_boxes_are_smooth_and_follow():
    rng = np.random.default_rng(0)
    faces = [(100.0 + 2 * i + rng.normal(0, 3), 100.0 + rng.normal(0, 3), 50.0 + rng.normal(0, 2)) for i in range(60)]
    boxes = follow_boxes(faces, (640, 360))
    centres = np.array([x + s / 2 for x, _, s in boxes])
    raw = np.array([f[0] for f in faces])
    assert np.diff(centres, 2).std() < 0.2 * np.diff(raw, 2).std()  # the noise is smoothed away
    assert abs(centres[30] - (100 + 60)) < 3  # and the box follows the drift without lag


def test_cut_pads_with_the_border():
    frame = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    crop = cut(frame, (-2, 1, 4))
    assert crop.shape == (4, 4, 3)
    np.testing.assert_array_equal(crop[:, 2:], frame[1:5, 0:2])
    np.testing.assert_array_equal(crop[:, 0], frame[1:5, 0])  # repeated border column


def test_paste_back_changes_only_the_box():
    rng = np.random.default_rng(1)
    canvas = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    crop = np.full((32, 32, 3), 255, np.uint8)
    box = (250, 40, 80)  # reaches outside the canvas on the right
    out = paste_back(canvas, crop, box)
    assert out.shape == canvas.shape
    outside = np.ones(canvas.shape[:2], bool)
    outside[40:120, 250:300] = False
    np.testing.assert_array_equal(out[outside], canvas[outside])
    assert (out[80, 290] == 255).all()  # the middle of the box is the crop
    np.testing.assert_array_equal(out[40, 250:300], canvas[40, 250:300])  # feathered to the canvas at the edge


# ---- the one portrait-framing rule of every command (issue #26) --------------------------------------------

# frame_portrait's box for astronaut.png (512x512) with crop auto: what fomm-animate, fomm-live and fomm-serve
# all report and use (the head square, 1.6x Haar's face square raised by 0.1 of it, plus upstream's 10 % margin).
ASTRONAUT_CROP = (134, 15, 179)
ASTRONAUT_MESSAGE = "source crop astronaut.png: x=134 y=15 side=179 (face)"


def portrait_distances(frame_rgb: np.ndarray) -> tuple[float, float]:
    """How far a model-sized portrait frame (RGB uint8, as a command showed or wrote it) is from astronaut.png
    framed by ASTRONAUT_CROP, and from the whole photo squeezed into the frame: mean absolute difference in
    grey levels. A command that frames the portrait gives (small, large); one that squeezes it (large, small)."""
    from fomm_deploy.runtime.media.preprocess import prepare_frame, to_uint8

    size = frame_rgb.shape[:2]
    framed = to_uint8(prepare_frame(cut(astronaut(), ASTRONAUT_CROP), size)).astype(np.float32)
    squeezed = to_uint8(prepare_frame(astronaut(), size)).astype(np.float32)
    frame = frame_rgb.astype(np.float32)
    return float(np.abs(frame - framed).mean()), float(np.abs(frame - squeezed).mean())


def test_frame_portrait_centres_the_astronauts_face():
    image = astronaut()
    framed = framing.frame_portrait(image, source=ASTRONAUT)
    assert (framed.box, framed.how, framed.message) == (ASTRONAUT_CROP, "face", ASTRONAUT_MESSAGE)
    np.testing.assert_array_equal(framed.image, image[15:15 + 179, 134:134 + 179])
    # follow is auto for a still portrait; the face (Haar's square) is well inside the box
    assert framing.frame_portrait(image, "follow", source=ASTRONAUT).box == ASTRONAUT_CROP
    x, y, s = ASTRONAUT_CROP
    assert x < FACE_CX - FACE_SIDE / 2 and FACE_CX + FACE_SIDE / 2 < x + s
    assert y < FACE_CY - FACE_SIDE / 2 and FACE_CY + FACE_SIDE / 2 < y + s
    # the face fills the frame: its square is more than half of the box's side (the whole photo: a fifth)
    assert FACE_SIDE / s > 0.5


def test_frame_portrait_centre_none_and_without_a_face():
    wide = np.full((100, 200, 3), 90, np.uint8)
    centre = framing.frame_portrait(astronaut(), "centre", source="the portrait")
    assert (centre.box, centre.how, centre.message) == ((0, 0, 512), "centre",
                                                        "source crop the portrait: x=0 y=0 side=512 (centre)")
    none = framing.frame_portrait(wide, "none", source=Path("/photos/wall.png"))
    assert none.box is None and none.image.shape == (200, 200, 3)
    assert (none.image[:50] == 255).all() and (none.image[50:150] == 90).all()  # padded white, as --fit pad
    assert none.message == "source crop wall.png: none (the whole 200x100 portrait, made square by fit pad)"
    assert framing.frame_portrait(wide, "none", fit="stretch").image.shape == (100, 200, 3)
    missing = framing.frame_portrait(wide, source=Path("/photos/wall.png"))
    assert missing.box == (50, 0, 100) and missing.how == "centre"
    assert missing.message.startswith("warning: no face found in /photos/wall.png; source crop wall.png: x=50 y=0 "
                                      "side=100 (centre); FOMM animates a face")
    for framed in (centre, none, missing):
        assert "\n" not in framed.message
    with pytest.raises(framing.InputError, match="crop must be one of auto, follow, centre, none, got 'sideways'"):
        framing.frame_portrait(wide, "sideways")


# ---- the detector on the generated set ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_upright_astronaut_is_found(detector):
    cx, cy, side = detector.detect(astronaut())
    assert abs(cx - FACE_CX) < 3 and abs(cy - FACE_CY) < 3 and abs(side - FACE_SIDE) < 5


def test_detector_holds_tilted_turned_and_occluded_faces(detector):
    """Thresholds from the measured rates (runtime/FRAMING.md: 79 % of all, 80 % of |angle| > 20 deg on 80 frames,
    against 46 % / 10 % for the plain frontal cascade), with some slack: the first 60 frames of the set."""
    stills = list(still_set(60))
    ok = [_hit(detector.detect(frame), truth) for _, _, frame, truth in stills]
    tilted = [o for (angle, _, _, _), o in zip(stills, ok) if abs(angle) > 20]
    assert np.mean(ok) >= 0.7, np.mean(ok)
    assert np.mean(tilted) >= 0.65, np.mean(tilted)
    # The plain frontal cascade (the webcam's) misses most of the tilted faces: this is what the rest adds.
    plain = FaceDetector(angles=(), profile=False)
    plain_tilted = [_hit(plain.detect(frame), truth) for angle, _, frame, truth in stills if abs(angle) > 20]
    assert np.mean(plain_tilted) < np.mean(tilted) - 0.4, (np.mean(plain_tilted), np.mean(tilted))


def test_a_badge_does_not_take_the_tilting_head(detector):
    """In this clip the frontal cascade takes the suit's badge while the head is tilted; the tracker keeps
    to the head (it tries the rotated copies near the last face first), so the clip box stays small."""
    clip = list(moving_clip(30, seed=3, max_angle=20, scale=0.6))
    plain = [detector.detect(frame) for frame, _ in clip]
    assert sum(f is not None and not _hit(f, t) for f, (_, t) in zip(plain, clip)) >= 5  # the badge
    tracker = ClipTracker(detector)
    tracked = [tracker.update(frame) for frame, _ in clip]
    assert all(_hit(f, t) for f, (_, t) in zip(tracked, clip))
    box = clip_box(tracked, (FRAME_W, FRAME_H))
    assert all(_inside(t, box) for _, t in clip) and box[2] < 240


def test_clip_box_holds_the_moving_face(detector):
    clip = list(moving_clip(30))
    tracker = ClipTracker(detector)
    found = [tracker.update(frame) for frame, _ in clip]
    box = clip_box(found, (FRAME_W, FRAME_H))
    assert box is not None and all(_inside(t, box) for _, t in clip)
    x, y, s = box
    assert x + s / 2 > FRAME_W / 2 + 40  # off centre, where the face is


def test_live_detector_on_the_generated_set():
    """fomm-live's FaceFramer on the set above (runtime/FRAMING.md, row "live"): measured 83 % of the first 60
    stills and 81 % of their tilted ones, every frame of the 40-frame clip, its box around the face in every
    frame with 1.08 % jitter (1.52 % without its smoothing). Thresholds with some slack; nothing timed."""
    from fomm_deploy.runtime.webcam.framer import FaceFramer

    detector = FaceFramer()._tracker.detector  # the detector live mode runs, as the FRAMING.md row describes it
    assert (detector.detect_width, detector.equalize) == (DETECTORS[LIVE]["detect_width"], DETECTORS[LIVE]["equalize"])
    stills = list(still_set(60))
    ok = [_hit(detector.detect(frame), truth) for _, _, frame, truth in stills]
    tilted = [o for (angle, _, _, _), o in zip(stills, ok) if abs(angle) > 20]
    assert np.mean(ok) >= 0.75 and np.mean(tilted) >= 0.7, (np.mean(ok), np.mean(tilted))
    clip = list(moving_clip(40))
    tracker = ClipTracker(detector)
    assert all(_hit(tracker.update(frame), truth) for frame, truth in clip)
    boxes, true_c = live_boxes(clip)
    assert all(_inside(truth, box) for (_, truth), box in zip(clip, boxes))
    box_c = np.array([[x + s / 2, y + s / 2] for x, y, s in boxes])
    jitter = 100 * np.linalg.norm(np.diff(box_c - true_c, axis=0), axis=1).std() / clip[0][1][2]
    assert jitter < 1.3, jitter


def _table(rows: list[dict]) -> str:
    lines = ["| detector | hit rate, all | \\|angle\\| <= 10° | \\|angle\\| > 20° | occluded | clip hit rate | "
             "jitter raw (% face) | jitter follow box (% face) | clip box holds face | ms / 640x360 frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['all']:.0%} | {r['|angle|<=10']:.0%} | {r['|angle|>20']:.0%} | "
                     f"{r['occluded']:.0%} | {r['clip_hits']:.0%} | {r['jitter_raw']:.2f} | {r['jitter_follow']:.2f} | "
                     f"{'yes' if r['clip_box_holds'] else 'no'} | {r['ms']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python tests/runtime/media/test_framing.py [N_STILLS N_CLIP_FRAMES [ONLY]]: ONLY, e.g. live, picks rows by name
    print(_table(measure(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:4])))
