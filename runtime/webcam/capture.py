"""Opening a camera (index, device, URL, or a video file standing in for one) and reading it in a thread."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from ..core.errors import CameraError
from .frames import Captured
from .slots import LatestSlot


def parse_camera(spec: str) -> tuple[str, object]:
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
    """Open a camera index, device path, URL or video file: (kind, capture). The error lists what was tried.

    ``opener`` replaces ``cv2.VideoCapture`` (tests pass a fake camera); it gets the parsed target.

    Raises:
        CameraError: nothing could be opened.
    """
    opener = opener or cv2.VideoCapture
    kind, target = parse_camera(spec)
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
    """Reads frames as they come and puts each into ``slot`` as a :class:`Captured` (BGR uint8, HxWx3).

    The camera opens in the constructor, so a camera that cannot be opened is an error before anything
    starts. Video files are paced at their frame rate, as a live camera would deliver them; with ``loop``
    they start again at their end. A camera that stops delivering frames (``max_failures`` reads in a row)
    is reported as lost and reopened every ``reconnect_interval`` seconds; the session keeps running meanwhile.

    ``status`` is ``running``, ``lost`` (reconnecting), ``ended`` (a video file's end) or ``stopped``
    (``stop()`` was called). ``mirror`` is asked for every frame: True flips it horizontally.
    """

    def __init__(self, spec: str, slot: LatestSlot, *, loop: bool = False, mirror: Callable[[], bool] = lambda: False,
                 opener: Callable | None = None, reconnect_interval: float = 1.0, max_failures: int = 5) -> None:
        super().__init__(name="capture", daemon=True)
        self.spec, self.slot, self.loop, self.mirror = spec, slot, loop, mirror
        self.opener = opener
        self.reconnect_interval = reconnect_interval
        self.max_failures = max_failures
        self.kind, self.cap = open_camera(spec, opener)

        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self.status = "running"
        self.reconnects = 0  # reopen attempts after the camera was lost, failed ones included
        self.captured = 0  # frames delivered to the slot
        self._halt = threading.Event()

    def stop(self) -> None:
        """Ask the thread to finish; it releases the camera and closes the slot."""
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.cap.release()
            self.status = "stopped" if self._halt.is_set() else self.status
            self.slot.close()  # downstream stages drain what is left, then stop

    def _run(self) -> None:
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
    """Stands in for a camera that failed to reopen: every read fails, so the next attempt comes."""

    def read(self):
        return False, None

    def release(self) -> None:
        pass
