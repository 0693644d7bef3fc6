"""``fomm-live`` / ``python runtime/live.py``: drive a portrait with your face from a webcam, in real time.

Pipeline (each stage its own thread, joined by newest-wins slots, so lag never accumulates):

    camera -> [capture] -> newest frame -> [framing: face box, smoothed crop] -> newest crop
           -> [inference: keypoints + generator] -> newest result -> [main: preview, recording, keys]

A stage that is slower than the one before it simply skips the frames it had no time for; every
frame carries its capture time, so the capture-to-display latency is measured, not guessed.
No manual alignment: the first well-framed frame becomes the reference pose (press ``r`` to redo it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout: python runtime/live.py
    _here = Path(__file__).resolve().parent
    # Python put runtime/ itself first on sys.path; its modules must be imported as fomm_deploy.runtime.*.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    import fomm_deploy.runtime  # noqa: E402,F401 - the checkout's package (fomm_deploy/__init__.py)
    __package__ = "fomm_deploy.runtime"

from .cli_common import user_errors  # noqa: E402
from .errors import CameraError, FommError  # noqa: E402
from .names import backend_option, onnx_dir_option, precision_option, providers_option, tensorrt_missing  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
KEYS_HELP = [
    ("q / Esc", "quit"),
    ("r", "reset the reference pose (look straight ahead)"),
    ("n / p", "next / previous portrait (when --source is a folder)"),
    ("a", "toggle relative / absolute motion"),
    ("b", "show / hide the crop box"),
    ("o", "show / hide the overlay"),
    ("m", "mirror the camera view"),
    ("h", "show / hide this help"),
]


# ------------------------------------------------------------------------------------------------
# Plumbing
# ------------------------------------------------------------------------------------------------


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an unread item (counting it as dropped), ``get`` waits for a new one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._fresh = False
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._item, self._fresh = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        """The newest unread item, or None on timeout / when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._fresh or self._closed, timeout):
                return None
            if not self._fresh:
                return None
            self._fresh = False
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class StageTimer:
    """Moving averages of per-stage milliseconds and of the output rate."""

    def __init__(self, window: int = 30) -> None:
        self._ms: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._window = window
        self._outputs: deque = deque(maxlen=window)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._ms.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def output(self, t: float) -> None:
        with self._lock:
            self._outputs.append(t)

    def mean_ms(self) -> dict[str, float]:
        with self._lock:
            return {k: float(np.mean(v)) for k, v in self._ms.items() if v}

    def fps(self) -> float:
        with self._lock:
            if len(self._outputs) < 2:
                return 0.0
            span = self._outputs[-1] - self._outputs[0]
            return (len(self._outputs) - 1) / span if span > 0 else 0.0


@dataclass
class Captured:
    index: int
    t_capture: float
    frame: np.ndarray  # BGR uint8


@dataclass
class Framed:
    captured: Captured
    box: tuple[int, int, int]  # x, y, side of the square crop in camera pixels
    face_found: bool
    stable_frames: int  # consecutive frames with a steady face box, as of this frame
    crop: np.ndarray  # model frame, RGB float32


@dataclass
class Result:
    framed: Framed
    portrait: np.ndarray  # RGB uint8 (H, W, 3)
    t_done: float
    calibrated: bool


# ------------------------------------------------------------------------------------------------
# Capture
# ------------------------------------------------------------------------------------------------


def _parse_camera(spec: str) -> tuple[str, object]:
    """('index', 0) for a camera index, ('file', path) for a video file, ('device'|'url', spec) otherwise."""
    if spec.isdigit():
        return "index", int(spec)
    if "://" in spec:
        return "url", spec
    if spec.startswith("/dev/"):
        return "device", spec
    return "file", spec


def _video_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*")) if sys.platform.startswith("linux") else []


def open_camera(spec: str, opener: Callable | None = None):
    """Open a camera index, device path, URL or video file; the error lists what was tried.

    Raises:
        CameraError: nothing could be opened.
    """
    import cv2

    opener = opener or cv2.VideoCapture
    kind, target = _parse_camera(spec)
    if kind == "file" and not Path(str(target)).is_file():
        raise CameraError(f"--camera {spec}: no such camera or video file (a camera is an index such as 0, "
                          "a device such as /dev/video0, or a URL)")
    # OpenCV logs its own warnings for every backend it tries; our error below says it better.
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        cap = opener(target)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if kind in ("index", "device"):
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if not cap.isOpened():
        cap.release()
        if kind in ("index", "device"):
            devices = _video_devices()
            found = f"video devices present: {', '.join(devices)}" if devices else "no /dev/video* devices present"
            raise CameraError(f"cannot open camera {spec} (tried OpenCV VideoCapture({target!r}); {found}). "
                              "Is it plugged in and not used by another program? Try --camera 1, or "
                              "--camera clip.mp4 to test with a video")
        raise CameraError(f"cannot open --camera {spec} as a video stream or file")
    return kind, cap


class CaptureThread(threading.Thread):
    """Reads frames as they come and keeps only the newest. Video files are paced at their frame rate.

    A camera that stops delivering frames is reported as lost and reopened every ``reconnect_interval``
    seconds; the session keeps running meanwhile.
    """

    def __init__(self, spec: str, slot: LatestSlot, *, loop: bool = False, mirror: Callable[[], bool] = lambda: False,
                 opener: Callable | None = None, reconnect_interval: float = 1.0, max_failures: int = 5) -> None:
        super().__init__(name="capture", daemon=True)
        self.spec, self.slot, self.loop, self.mirror = spec, slot, loop, mirror
        self.opener = opener
        self.reconnect_interval = reconnect_interval
        self.max_failures = max_failures
        self.kind, self.cap = open_camera(spec, opener)
        import cv2

        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self.status = "running"
        self.reconnects = 0
        self.captured = 0
        self._halt = threading.Event()
        self.finished = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.cap.release()
            self.status = "stopped" if self._halt.is_set() else self.status
            self.slot.close()  # downstream stages drain what is left, then stop
            self.finished.set()

    def _run(self) -> None:
        import cv2

        failures = 0
        start = time.perf_counter()
        played = 0  # frames of the file shown since ``start`` (for pacing)
        while not self._halt.is_set():
            ok, frame = self.cap.read()
            if not ok or frame is None:
                if self.kind == "file":
                    if self.loop and played > 0:
                        self.cap.release()
                        _, self.cap = open_camera(self.spec, self.opener)
                        start, played = time.perf_counter(), 0
                        continue
                    self.status = "ended"
                    return
                failures += 1
                if failures < self.max_failures:
                    continue
                self.status = "lost"  # the preview says so; keep trying
                self._halt.wait(self.reconnect_interval)
                if self._halt.is_set():
                    return
                self.reconnects += 1
                self.cap.release()
                try:
                    _, self.cap = open_camera(self.spec, self.opener)
                    failures = 0
                except CameraError:
                    self.cap = _ClosedCapture()
                continue
            failures = 0
            self.status = "running"
            if self.kind == "file":  # a file stands in for a live camera: deliver frames in real time
                due = start + played / self.fps
                delay = due - time.perf_counter()
                if delay > 0:
                    self._halt.wait(delay)
                played += 1
            if self.mirror():
                frame = cv2.flip(frame, 1)
            self.captured += 1
            self.slot.put(Captured(self.captured - 1, time.perf_counter(), frame))


class _ClosedCapture:
    def read(self):
        return False, None

    def release(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# Face framing
# ------------------------------------------------------------------------------------------------


class FaceFramer:
    """Square crop around the face: Haar cascade (ships with opencv-python < 5), margin, temporal smoothing.

    Args:
        crop: False uses the centre square of the frame.
        scale: crop side / detected face side (Haar boxes cover brow to mouth; 2.0 frames the head like
            VoxCeleb).
        raise_by: move the crop up by this fraction of the face size (room for hair, less neck).
        smoothing: 0 follows detections immediately, towards 1 moves the box ever more slowly.
    """

    def __init__(self, *, crop: bool = True, scale: float = 2.0, raise_by: float = 0.12, smoothing: float = 0.6,
                 detect_width: int = 320) -> None:
        import cv2

        self.crop_enabled = crop
        self.scale, self.raise_by, self.smoothing = scale, raise_by, smoothing
        self.detect_width = detect_width
        self._box: np.ndarray | None = None  # cx, cy, side (float)
        self.stable_frames = 0
        if crop:
            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise FommError(f"cannot load OpenCV's face detector ({path}); install opencv-python<5 "
                                "(5.0 removed the Haar cascades) or run with --no-crop")

    def reset(self) -> None:
        self._box = None
        self.stable_frames = 0

    def detect(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """Largest face as (cx, cy, side) in frame pixels, or None."""
        import cv2

        h, w = frame.shape[:2]
        f = min(1.0, self.detect_width / w)
        grey = cv2.cvtColor(cv2.resize(frame, (int(w * f), int(h * f))) if f < 1 else frame, cv2.COLOR_BGR2GRAY)
        min_side = max(20, int(0.08 * min(grey.shape)))
        faces = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, bw, bh = max(faces, key=lambda r: r[2] * r[3])
        side = max(bw, bh) / f
        return (x + bw / 2) / f, (y + bh / 2) / f, side

    def box(self, frame: np.ndarray) -> tuple[tuple[int, int, int], bool]:
        """The smoothed square crop box (x, y, side) for this frame, and whether a face was found in it."""
        h, w = frame.shape[:2]
        if not self.crop_enabled:
            s = min(h, w)
            self.stable_frames += 1
            return ((w - s) // 2, (h - s) // 2, s), True
        found = self.detect(frame)
        if found is not None:
            cx, cy, side = found
            target = np.array([cx, cy - self.raise_by * side, side * self.scale])
            jumped = self._box is None or abs(target[2] - self._box[2]) > 0.25 * self._box[2]
            if jumped:
                self._box = target  # first detection or a jump: no slow glide across the frame
                self.stable_frames = 1
            else:
                self._box = self.smoothing * self._box + (1 - self.smoothing) * target
                self.stable_frames += 1
        else:
            self.stable_frames = 0
        if self._box is None:  # never seen a face: centre square
            s = min(h, w)
            return ((w - s) // 2, (h - s) // 2, s), False
        cx, cy, side = self._box
        side = int(round(min(side, 2 * max(h, w))))
        return (int(round(cx - side / 2)), int(round(cy - side / 2)), side), found is not None

    @staticmethod
    def cut(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
        """The square crop; parts outside the frame repeat its border pixels."""
        import cv2

        x, y, s = box
        h, w = frame.shape[:2]
        pad = max(0, -x, -y, x + s - w, y + s - h)
        if pad:
            frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x, y = x + pad, y + pad
        return frame[y:y + s, x:x + s]


# ------------------------------------------------------------------------------------------------
# The session
# ------------------------------------------------------------------------------------------------


@dataclass
class LiveOptions:
    camera: str = "0"
    loop: bool = False
    crop: bool = True
    crop_scale: float = 2.0
    smoothing: float = 0.6
    calibrate_frames: int = 3
    relative: bool = True
    adapt_scale: bool = True
    mirror: bool = False
    window: bool = True
    overlay: bool = True
    show_box: bool = True
    virtual_cam: bool = False
    output: Path | None = None
    max_frames: int | None = None
    max_seconds: float | None = None
    preview_height: int = 360


@dataclass
class LiveReport:
    captured: int = 0
    processed: int = 0
    shown: int = 0
    dropped_capture: int = 0
    dropped_framing: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # frame index, x, y, side
    stage_ms: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    camera_status: str = ""
    reconnects: int = 0
    reference_frame: int | None = None
    output: Path | None = None
    reason: str = ""


def list_portraits(source: Path) -> list[Path]:
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FommError(f"--source {source} is a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return found
    return [source]


class LiveSession:
    """Runs the live pipeline. ``animator`` is an ``Animator`` over activated backends."""

    def __init__(self, animator, portraits: list[Path], options: LiveOptions, *,
                 camera_opener: Callable | None = None, log: Callable[[str], None] = print) -> None:
        from .preprocess import load_image

        self.animator = animator
        self.options = options
        self.log = log
        self.portraits = portraits
        self.portrait_index = 0
        # Read every portrait before the camera opens: a bad file is an error now, not mid-session.
        self._images = [load_image(p) for p in portraits]
        self.animator.set_source(self._images[0])
        self.framer = FaceFramer(crop=options.crop, scale=options.crop_scale, smoothing=options.smoothing)
        self.timer = StageTimer()
        self.report = LiveReport()
        self.captured_slot, self.framed_slot, self.result_slot = LatestSlot(), LatestSlot(), LatestSlot()
        self._commands: deque = deque()
        self._reset_framer = threading.Event()
        self._stop = threading.Event()
        self._mirror = options.mirror
        self.capture = CaptureThread(options.camera, self.captured_slot, loop=options.loop,
                                     mirror=lambda: self._mirror, opener=camera_opener)
        self._errors: list[BaseException] = []
        self._show_help = False

    # -- worker stages ---------------------------------------------------------------------------

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # surface in the main thread
                self._errors.append(exc)
                self._stop.set()
        return run

    def _items(self, slot: LatestSlot, between: Callable[[], None] | None = None) -> Iterator:
        """Items from ``slot`` until it closes or the session stops; ``between`` runs before each wait."""
        while not self._stop.is_set():
            if between is not None:
                between()
            item = slot.get(timeout=0.1)
            if item is not None:
                yield item
            elif slot.closed:
                return

    def _framing_loop(self) -> None:
        import cv2

        for item in self._items(self.captured_slot):
            t0 = time.perf_counter()
            if self._reset_framer.is_set():  # the framer belongs to this thread; others only ask
                self._reset_framer.clear()
                self.framer.reset()
            box, found = self.framer.box(item.frame)
            crop = self.framer.cut(item.frame, box)
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
            model = self.animator.prepare(crop)
            self.timer.add("framing", (time.perf_counter() - t0) * 1000)
            self.report.boxes.append((item.index, *box))
            self.framed_slot.put(Framed(item, box, found, self.framer.stable_frames, model))
        self.framed_slot.close()

    def _inference_loop(self) -> None:
        # Calibrated = the animator has a reference pose; only this thread sets or resets it.
        for item in self._items(self.framed_slot, between=self._apply_commands):
            t0 = time.perf_counter()
            if (not self.animator.has_reference and item.face_found
                    and item.stable_frames >= self.options.calibrate_frames):
                self.animator.set_reference(item.crop, prepared=True)
                self.report.reference_frame = item.captured.index
            calibrated = self.animator.has_reference
            if calibrated:
                portrait = self.animator.animate_prepared(item.crop[None])[0]
            else:  # until a well-framed reference exists, show the portrait still
                portrait = self.animator.source_uint8()
            t1 = time.perf_counter()
            self.timer.add("inference", (t1 - t0) * 1000)
            self.report.processed += 1
            self.result_slot.put(Result(item, portrait, t1, calibrated))
        self.result_slot.close()

    def _apply_commands(self) -> None:
        while self._commands:
            command = self._commands.popleft()
            if command == "reset":
                self.animator.reset_reference()
                self._reset_framer.set()
                self.log("reference reset: look straight ahead")
            elif command in ("next", "prev") and len(self._images) > 1:
                step = 1 if command == "next" else -1
                self.portrait_index = (self.portrait_index + step) % len(self._images)
                self.animator.set_source(self._images[self.portrait_index])
                self.log(f"portrait: {self.portraits[self.portrait_index].name}")
            elif command == "relative":
                self.animator.relative = not self.animator.relative
                self.log("motion: " + ("relative" if self.animator.relative else "absolute"))

    # -- presentation ----------------------------------------------------------------------------

    def compose(self, result: Result) -> np.ndarray:
        """Preview: camera frame with the crop box | portrait, both at ``preview_height``; BGR uint8."""
        import cv2

        ph = self.options.preview_height
        cam = result.framed.captured.frame.copy()
        h, w = cam.shape[:2]
        if self.options.show_box:
            x, y, s = result.framed.box
            colour = (0, 200, 0) if result.framed.face_found else (0, 160, 255)
            cv2.rectangle(cam, (x, y), (x + s, y + s), colour, max(2, w // 320))
        cam_w = int(round(w * ph / h / 2)) * 2
        cam = cv2.resize(cam, (cam_w, ph), interpolation=cv2.INTER_AREA)
        portrait = cv2.resize(cv2.cvtColor(result.portrait, cv2.COLOR_RGB2BGR), (ph, ph),
                              interpolation=cv2.INTER_LINEAR)
        canvas = np.concatenate([cam, portrait], axis=1)
        if self.options.overlay:
            self._draw_overlay(canvas, result)
        return canvas

    def _draw_overlay(self, canvas: np.ndarray, result: Result) -> None:
        import cv2

        ms = self.timer.mean_ms()
        latency = (result.t_done - result.framed.captured.t_capture) * 1000
        lines = [f"{self.timer.fps():4.1f} fps  latency {latency:5.0f} ms",
                 "  ".join(f"{k} {v:.0f} ms" for k, v in ms.items()),
                 f"dropped {self.captured_slot.dropped + self.framed_slot.dropped}"]
        if self.capture.status == "lost":
            lines.append(f"CAMERA LOST - reconnecting ({self.capture.reconnects})")
        if not result.calibrated:
            lines.append("look straight ahead: calibrating...")
        if self._show_help:
            lines += [f"{k}: {v}" for k, v in KEYS_HELP]
        else:
            lines.append("h: help")
        for i, text in enumerate(lines):
            org = (8, 22 + 20 * i)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)

    def _key(self, key: int) -> bool:
        """Handle a key; False means quit."""
        if key in (ord("q"), 27):
            return False
        mapping = {ord("r"): "reset", ord("n"): "next", ord("p"): "prev", ord("a"): "relative"}
        if key in mapping:
            self._commands.append(mapping[key])
        elif key == ord("b"):
            self.options.show_box = not self.options.show_box
        elif key == ord("o"):
            self.options.overlay = not self.options.overlay
        elif key == ord("m"):
            self._mirror = not self._mirror
        elif key == ord("h"):
            self._show_help = not self._show_help
            for k, v in KEYS_HELP:
                self.log(f"  {k:<8} {v}")
        return True

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> LiveReport:
        import cv2

        from .video import VideoWriter

        opts = self.options
        window = "fomm-live (h: help, q: quit)"
        writer = vcam = None
        threads = [threading.Thread(target=self._guard(self._framing_loop), name="framing", daemon=True),
                   threading.Thread(target=self._guard(self._inference_loop), name="inference", daemon=True)]
        started = time.perf_counter()
        try:
            if opts.virtual_cam:
                vcam = _open_virtual_cam(*self.animator.frame_size[::-1], self.capture.fps)
            self.capture.start()
            for t in threads:
                t.start()
            while not self._stop.is_set():
                result = self.result_slot.get(timeout=0.1)
                if result is None:
                    if self.result_slot.closed:
                        self.report.reason = "camera stream ended"
                        break
                    if opts.max_seconds and time.perf_counter() - started > opts.max_seconds:
                        self.report.reason = "time limit"
                        break
                    if opts.window and not self._pump(window):
                        break
                    continue
                now = time.perf_counter()
                self.timer.output(now)
                self.report.latencies_ms.append((now - result.framed.captured.t_capture) * 1000)
                self.report.shown += 1
                frame = self.compose(result)
                if opts.output is not None:
                    if writer is None:
                        writer = VideoWriter(opts.output, self.capture.fps, (frame.shape[1], frame.shape[0]))
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                if vcam is not None:
                    vcam.send(result.portrait)
                if opts.window:
                    cv2.imshow(window, frame)
                    if not self._pump(window):
                        break
                if opts.max_frames and self.report.shown >= opts.max_frames:
                    self.report.reason = "frame limit"
                    break
                if opts.max_seconds and now - started > opts.max_seconds:
                    self.report.reason = "time limit"
                    break
        except KeyboardInterrupt:
            self.report.reason = "interrupted"
        finally:
            self._stop.set()
            self.capture.stop()
            for slot in (self.captured_slot, self.framed_slot, self.result_slot):
                slot.close()
            self.capture.join(timeout=5)
            for t in threads:
                t.join(timeout=5)
            if writer is not None:
                if self._errors:
                    writer.abort()
                else:
                    self.report.output = writer.close()
            if vcam is not None:
                vcam.close()
            if opts.window:
                cv2.destroyAllWindows()
        if self._errors:
            raise self._errors[0]
        r = self.report
        r.captured, r.camera_status, r.reconnects = self.capture.captured, self.capture.status, self.capture.reconnects
        r.dropped_capture, r.dropped_framing = self.captured_slot.dropped, self.framed_slot.dropped
        r.stage_ms, r.fps = self.timer.mean_ms(), self.timer.fps()
        return r

    def _pump(self, window: str) -> bool:
        """Process window events; False when the user quits or closes the window."""
        import cv2

        key = cv2.waitKey(1) & 0xFF
        if key != 0xFF and not self._key(key):
            self.report.reason = "quit"
            return False
        try:
            if self.report.shown and cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:
                self.report.reason = "window closed"
                return False
        except cv2.error:
            self.report.reason = "window closed"
            return False
        return True


def _require_pyvirtualcam():
    try:
        import pyvirtualcam
    except ImportError:
        raise FommError("--virtual-cam needs pyvirtualcam: pip install 'fomm-deploy[virtualcam]' (and "
                        "v4l2loopback on Linux, or OBS's virtual camera on Windows/macOS)") from None
    return pyvirtualcam


def _open_virtual_cam(width: int, height: int, fps: float):
    pyvirtualcam = _require_pyvirtualcam()
    try:
        cam = pyvirtualcam.Camera(width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except Exception as exc:
        raise FommError(f"cannot start the virtual camera: {exc}") from None
    print(f"virtual camera: {cam.device}")
    return cam


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def choose_backend(requested: str, exported) -> tuple[str, str]:
    """(backend, precision): TensorRT fp16 when available and exported, else ONNX Runtime."""

    if requested != "auto":
        return requested, ("fp16" if requested == "tensorrt" else "fp32")
    if not tensorrt_missing() and exported.has_precision("fp16"):
        return "tensorrt", "fp16"
    return "onnxruntime", "fp32"


@click.command()
@click.option("--source", required=True, type=click.Path(exists=False, path_type=Path),
              help="Portrait to animate, or a folder of portraits (n/p switch between them).")
@onnx_dir_option()
@click.option("--camera", default="0", show_default=True,
              help="Camera index (0, 1, ...), device (/dev/video0), stream URL, or a video file standing in for a camera.")
@click.option("--loop", is_flag=True, help="With a video file as camera: start again at its end.")
@backend_option("auto", auto=True, help="auto: TensorRT fp16 when TensorRT and the fp16 graphs are there, else "
               "ONNX Runtime; onnxruntime, tensorrt, or torch (the PyTorch reference, slow).")
@precision_option(None, help="Override the precision the backend choice implies (fp32, fp16, int8).")
@providers_option()
@click.option("--no-crop", is_flag=True, help="Use the centre square of the camera instead of following the face.")
@click.option("--crop-scale", default=2.0, show_default=True, help="Crop side relative to the detected face.")
@click.option("--smoothing", default=0.6, show_default=True, type=click.FloatRange(0, 0.99),
              help="Crop box smoothing over time (0: none).")
@click.option("--relative/--absolute", default=True, show_default=True)
@click.option("--adapt-scale/--no-adapt-scale", default=True, show_default=True,
              help="Scale your motion to the portrait's keypoint spread.")
@click.option("--mirror", is_flag=True, help="Mirror the camera (selfie view).")
@click.option("--no-window", is_flag=True, help="Headless: no preview window (use with --output or --virtual-cam).")
@click.option("--no-overlay", is_flag=True, help="Start without the fps/latency overlay (o toggles it).")
@click.option("--virtual-cam", is_flag=True, help="Send the portrait to a virtual camera (pyvirtualcam).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Record the preview (camera | portrait) to this .mp4.")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after this many output frames.")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@user_errors
def main(source: Path, onnx_dir: Path, camera: str, loop: bool, backend: str, precision: str | None,
         providers: tuple[str, ...] | None, no_crop: bool, crop_scale: float, smoothing: float, relative: bool, adapt_scale: bool,
         mirror: bool, no_window: bool, no_overlay: bool, virtual_cam: bool, output: Path | None,
         max_frames: int | None, max_seconds: float | None) -> None:
    """Drive a portrait with your face from a webcam, in real time.

    Look at the camera: the first well-framed frame becomes the reference pose, and the portrait follows
    your head, eyes and mouth from there. No manual alignment; press r to recalibrate, h for all keys.

    \b
    Examples:
      fomm-live --source avatar.jpg
      fomm-live --source portraits/ --camera 1 --virtual-cam
      fomm-live --source avatar.jpg --camera clip.mp4 --no-window --output session.mp4
    """
    from .graphs import load_exported, open_animator

    if output is not None and output.suffix.lower() != ".mp4":
        raise FommError(f"--output must end in .mp4, got {output.name}")
    if not no_window and not has_display():
        raise FommError("no display to show the preview on (DISPLAY is not set); use --no-window with "
                        "--output FILE or --virtual-cam")
    if virtual_cam:
        _require_pyvirtualcam()  # before the camera opens
    if not source.exists():
        raise FommError(f"portrait not found: {source}")
    portraits = list_portraits(source)
    exported = load_exported(onnx_dir)
    kind, prec = choose_backend(backend, exported)
    prec = precision or prec
    animator = open_animator(exported, kind, prec, providers=providers, relative=relative, adapt_scale=adapt_scale)
    graphs = "split graphs" if animator.generator_frame is not None else "reference generator"
    click.echo(f"backend: {kind} {prec}, {graphs} ({'chosen automatically' if backend == 'auto' else 'as asked'})",
               err=True)
    options = LiveOptions(camera=camera, loop=loop, crop=not no_crop, crop_scale=crop_scale, smoothing=smoothing,
                          relative=relative, adapt_scale=adapt_scale, mirror=mirror, window=not no_window,
                          overlay=not no_overlay, virtual_cam=virtual_cam, output=output, max_frames=max_frames,
                          max_seconds=max_seconds)
    session = LiveSession(animator, portraits, options, log=lambda m: click.echo(m, err=True))
    report = session.run()
    lat = np.array(report.latencies_ms) if report.latencies_ms else np.zeros(1)
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in report.stage_ms.items())
    click.echo(f"{report.shown} frames shown of {report.captured} captured ({report.dropped_capture + report.dropped_framing} "
               f"dropped), {report.fps:.1f} fps; capture-to-display latency median {np.median(lat):.0f} ms, "
               f"p90 {np.percentile(lat, 90):.0f} ms; {stages}; ended: {report.reason or report.camera_status}")
    if report.output is not None:
        click.echo(f"recorded {report.output}")


if __name__ == "__main__":
    # Usage lines show how the command was called: "python runtime/live.py" from a checkout.
    main(prog_name=f"python {sys.argv[0]}" if sys.argv[0].endswith(".py") else None)
