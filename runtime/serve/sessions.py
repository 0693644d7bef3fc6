"""Live puppeteering over WebSockets: sessions, and the worker that batches their frames.

Each session holds its own animator (source, reference pose, relative/absolute) and face framer over the
shared engines. The newest frame wins at every hop: a connection keeps only the newest frame it received
(``app.py``'s receive loop for ``/v1/live``), and the worker keeps only the newest framed frame per session. The worker takes the
waiting frames of up to ``max_batch`` sessions and animates them with one keypoint-detector call and one
generator call (``animator.animate_together``).
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import cv2
import numpy as np

from ..animator import animate_together
from ..core.errors import ImageError, InputError
from ..webcam.framer import FaceFramer, frame_for_model
from .engines import Engines
from .metrics import Metrics

CROPS = ("face", "centre")


@dataclass
class LiveResult:
    """What the worker made of one frame."""

    portrait: np.ndarray  # (H, W, 3) uint8 RGB at the model's size
    calibrated: bool  # False: the still portrait, waiting for a steady face
    batch: int  # sessions' frames in the generator call (0 when not animated)
    inference_s: float


def decode_jpeg(data: bytes, max_side: int) -> np.ndarray:
    """A camera frame (JPEG or PNG bytes) -> BGR uint8.

    Raises:
        ImageError: not an image, or larger than ``max_side`` on a side.
    """
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:  # more pixels than OPENCV_IO_MAX_IMAGE_PIXELS (fomm-serve sets it)
        raise ImageError(f"the frame is too large; frames may be at most {max_side} px on a side") from None
    if img is None:
        raise ImageError("the frame is not a JPEG or PNG image")
    if max(img.shape[:2]) > max_side:
        raise ImageError(f"the frame is {img.shape[1]}x{img.shape[0]}; frames may be at most {max_side} px on a side")
    return img


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InputError("cannot encode the result as JPEG")
    return buf.tobytes()


class SocketSession:
    """One puppeteering session: its animator, framers, options and counters.

    Only the worker thread touches the animator: the connection sets what it should change (a new portrait,
    already at the model's size; a new reference; relative or absolute motion), and the worker applies it
    before this session's next frame. Each is one slot, so a client that sends a thousand portraits or
    options without a frame holds one of each, never a thousand. Only the connection's frame loop touches the
    framers; both are made here, once, so that toggling the crop loads nothing.
    """

    _ids = itertools.count(1)

    def __init__(self, engines: Engines, source_rgb: np.ndarray) -> None:
        self.id = next(self._ids)
        self.animator = engines.animator(relative=True, adapt_scale=True)
        self.animator.set_source(source_rgb)
        self.crop = "face"
        self.framers = {"face": FaceFramer(crop=True), "centre": FaceFramer(crop=False)}
        self._reset_framer = False
        self._lock = threading.Lock()
        self._source: np.ndarray | None = None  # the newest portrait not yet given to the animator
        self._reset_reference = False
        self.relative = True
        self.frames = 0
        self.dropped = 0

    def prepare_source(self, rgb: np.ndarray) -> np.ndarray:
        """A decoded portrait -> the model frame the animator keeps (the size this session holds)."""
        return self.animator.prepare(rgb)

    def set_source(self, model_frame: np.ndarray) -> None:
        """The portrait, as :meth:`prepare_source` made it; it replaces any that is still waiting."""
        with self._lock:
            self._source = model_frame
            self._reset_reference = True

    def recalibrate(self) -> None:
        self._reset_framer = True  # the frame loop resets its framer; the worker its reference
        with self._lock:
            self._reset_reference = True

    def set_relative(self, relative: bool) -> None:
        self.relative = bool(relative)

    def set_crop(self, crop: str) -> None:
        if crop not in CROPS:
            raise InputError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
        if crop != self.crop:
            self.crop = crop
            self._reset_framer = True
            with self._lock:
                self._reset_reference = True

    def apply_changes(self) -> None:
        """The worker thread: what the connection asked for since the last frame, onto the animator."""
        with self._lock:
            source, self._source = self._source, None
            reset, self._reset_reference = self._reset_reference, False
        a = self.animator
        if source is not None:
            a.set_source(source)
        if reset:
            a.reset_reference()
        a.relative = self.relative

    def frame(self, bgr: np.ndarray):
        """Framing: (crop box, face found, steady frames, model frame)."""
        framer = self.framers[self.crop]
        if self._reset_framer:
            self._reset_framer = False
            framer.reset()
        box, found, model = frame_for_model(framer, bgr, self.animator.prepare)
        return box, found, framer.stable_frames, model


@dataclass
class _Pending:
    model: np.ndarray
    calibrate_ok: bool
    future: Future
    t: float


class SessionHub:
    """The batching worker: one thread, the only caller of the live sessions' animators."""

    def __init__(self, engines: Engines, metrics: Metrics) -> None:
        self.engines, self.metrics = engines, metrics
        self._cond = threading.Condition()
        self._pending: dict[SocketSession, _Pending] = {}  # newest framed frame per session, oldest first
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="fomm-serve-live", daemon=True)
        self._thread.start()

    def submit(self, session: SocketSession, model: np.ndarray, calibrate_ok: bool) -> Future:
        """Queue a session's framed frame, replacing (and dropping) one it still has waiting. The future
        resolves to a :class:`LiveResult`, or to None for a frame that was dropped."""
        future: Future = Future()
        with self._cond:
            old = self._pending.pop(session, None)
            if old is not None:
                old.future.set_result(None)
                session.dropped += 1
                self.metrics.inc("fomm_serve_frames_dropped_total")
            self._pending[session] = _Pending(model, calibrate_ok, future, time.perf_counter())
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[SocketSession, _Pending]]:
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._stop)
            if self._stop:
                return []
            taken = list(itertools.islice(self._pending.items(), self.engines.max_batch))
            for s, _ in taken:
                del self._pending[s]
            return taken

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return
            try:
                self._run(taken)
            except BaseException as exc:  # noqa: BLE001 - every waiting frame learns of it; the worker lives on
                for _, p in taken:
                    if not p.future.done():
                        p.future.set_exception(exc)

    def _run(self, taken: list[tuple[SocketSession, _Pending]]) -> None:
        t0 = time.perf_counter()
        animate, still = [], []
        for session, p in taken:
            session.apply_changes()
            a = session.animator
            (animate if a.has_reference or p.calibrate_ok else still).append((session, p))
        for session, p in still:  # until a steady face gives the reference pose: the portrait, still
            p.future.set_result(LiveResult(session.animator.source_uint8(), False, 0, 0.0))
        if not animate:
            return
        frames = np.stack([p.model for _, p in animate])
        portraits = animate_together([s.animator for s, _ in animate], frames, buckets=self.engines.buckets)
        t1 = time.perf_counter()
        self.metrics.observe("fomm_serve_batch_size", len(animate))
        self.metrics.observe("fomm_serve_stage_seconds", t1 - t0, stage="inference")
        for (session, p), portrait in zip(animate, portraits):
            self.metrics.observe("fomm_serve_stage_seconds", t0 - p.t, stage="queue")
            p.future.set_result(LiveResult(portrait, True, len(animate), t1 - t0))

