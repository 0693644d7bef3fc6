"""``LiveSession``: the threaded live pipeline, its options and its report.

Threads: capture (``CaptureThread``) -> framing -> inference -> the caller's thread, which shows, records
and sends each result and handles keys. Stages are joined by :class:`LatestSlot`, so a slow stage skips
frames instead of queueing them; every frame carries its capture time, so latency is measured.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..animator import pose_distances
from ..core import signals
from ..core.errors import BackendUnavailableError
from ..media.framing import FaceDetector, frame_portrait
from ..media.preprocess import load_source, to_uint8
from ..media.video import VideoWriter
from .capture import CaptureThread
from .framer import CALIBRATE_FRAMES, FaceFramer, frame_for_model, ready_to_calibrate
from .frames import Framed, Result
from .keys import ANIMATOR_ACTIONS, KEYS_HELP, MOVES, key_action, keys_help_text, portrait_number
from .preview import compose_preview, draw_lines, letterbox
from .slots import LatestSlot
from .timing import StageTimer
from .virtualcam import open_virtual_cam

WINDOW = "fomm-live (h: help, q: quit)"  # the preview window's title


@dataclass
class LiveOptions:
    """How a live session runs. Motion options (relative, adapt scale) belong to the animator."""

    camera: str = "0"  # index, /dev/video*, URL or video file (see capture.open_camera)
    loop: bool = False  # a video file as camera starts again at its end
    crop: bool = True  # the camera: follow the face; False: the centre square
    source_crop: str = "auto"  # the portraits: framing.frame_portrait's crop (--crop), as fomm-animate's source
    crop_scale: float = 2.0
    smoothing: float = 0.6
    calibrate_frames: int = CALIBRATE_FRAMES  # steady face frames before the reference pose is taken
    mirror: bool = False
    window: bool = True  # show the preview window
    overlay: bool = True
    show_box: bool = True
    ghost: bool = False  # the portrait blended over the camera crop, to line the face up (key g)
    virtual_cam: bool = False
    output: Path | None = None  # record to this .mp4 (what: output_size)
    # What --out records and --virtual-cam sends: "preview" (the recording is the preview, camera | portrait;
    # the virtual camera gets the portrait at the model's size), "portrait" (both: the portrait alone at the
    # model's size) or (width, height) (both: the portrait alone, letterboxed to that size).
    output_size: str | tuple[int, int] = "preview"
    keys: tuple[tuple[int, int], ...] = ()  # scripted key presses: (shown frame from 1, key code), keys.parse_key_script
    max_frames: int | None = None
    max_seconds: float | None = None
    preview_height: int = 360


@dataclass
class LiveReport:
    """What a session did; ``LiveSession.run`` returns it."""

    captured: int = 0  # frames the camera delivered
    processed: int = 0  # frames the inference stage handled
    shown: int = 0  # results shown / recorded / sent
    dropped_capture: int = 0  # frames replaced before framing picked them up
    dropped_framing: int = 0  # crops replaced before inference picked them up
    latencies_ms: list[float] = field(default_factory=list)  # capture-to-display, per shown result
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # frame index, x, y, side
    stage_ms: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    camera_status: str = ""  # CaptureThread.status at the end
    reconnects: int = 0
    reference_frame: int | None = None  # index of the frame that became the reference pose
    output: Path | None = None  # the recording, when one was written
    reason: str = ""  # why it ended
    seconds: float = 0.0  # wall time from the session's start to its end (what a recording lasts)
    recorded_frames: int = 0  # frames in the recording (constant rate: repeated while a frame was on screen)
    recorded_seconds: float = 0.0  # the recording's length
    recorded_size: tuple[int, int] | None = None  # the recording's (width, height)
    portraits_shown: list[int] = field(default_factory=list)  # per shown result: which portrait it animated
    best_matches: list[int] = field(default_factory=list)  # the portraits the best-match key picked


class LiveSession:
    """Runs the live pipeline. ``animator`` is an ``Animator`` over activated backends.

    Every portrait is read when the session is built (an image, or a video's first frame), and the camera
    opens then too, so bad input fails before anything runs. ``run`` blocks until the camera ends, a limit
    is reached or the user quits (q, Esc, closing the window, or Ctrl-C / SIGTERM when ``run`` is called in
    the main thread: the signal ends the session like q, and the recording is finished, not thrown away).
    The first frame with a steady face (``calibrate_frames`` in a row) becomes the reference pose.
    Keys come from the window (``cv2.waitKey``) and from ``options.keys`` (a script of presses at given
    shown frames, ``--keys``); both go through :meth:`handle_key`.
    ``camera_opener`` replaces ``cv2.VideoCapture``; ``log`` receives messages for the user.
    """

    def __init__(self, animator, portraits: list[Path], options: LiveOptions, *,
                 camera_opener: Callable | None = None, log: Callable[[str], None] = print,
                 hold_signals_after_stop: bool = False) -> None:
        # hold_signals_after_stop (the CLI): after a signal ended the session, keep swallowing SIGINT / SIGTERM
        # until the process exits, so that a repeated Ctrl-C cannot turn a finished session into an interrupt.
        self.hold_signals_after_stop = hold_signals_after_stop
        self.animator = animator
        self.options = options
        self.log = log
        self.portraits = portraits
        self.portrait_index = 0
        self._detector: FaceDetector | None = None
        # Read and frame every portrait before the camera opens: a bad file is an error now, not mid-session.
        self.portrait_boxes: list[tuple[int, int, int] | None] = []  # each portrait's crop box (None: crop none)
        self._images = [self._framed(p) for p in portraits]
        self.animator.set_source(self._images[0])
        self._portrait_kps: np.ndarray | None = None  # every portrait's keypoints, for the best-match key
        self._last_crop: np.ndarray | None = None  # the newest model frame inference saw (best match)
        self._keys = deque(options.keys)  # scripted key presses still to come
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
        # In the main thread SIGINT and SIGTERM (and more of them while the recording is finished) only ask the
        # session to end, so that it stops between frames and finishes its recording.
        self._stop_signals = signals.StopRequest(self._ending)

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
        for item in self._items(self.captured_slot):
            t0 = time.perf_counter()
            if self._reset_framer.is_set():  # the framer belongs to this thread; others only ask
                self._reset_framer.clear()
                self.framer.reset()
            box, found, model = frame_for_model(self.framer, item.frame, self.animator.prepare)
            self.timer.add("framing", (time.perf_counter() - t0) * 1000)
            self.report.boxes.append((item.index, *box))
            self.framed_slot.put(Framed(item, box, found, self.framer.stable_frames, model))
        self.framed_slot.close()

    def _inference_loop(self) -> None:
        # Calibrated = the animator has a reference pose; only this thread sets or resets it.
        for item in self._items(self.framed_slot, between=self.apply_commands):
            t0 = time.perf_counter()
            self._last_crop = item.crop
            if not self.animator.has_reference and ready_to_calibrate(item.face_found, item.stable_frames,
                                                                       self.options.calibrate_frames):
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
            # the still portrait (the ghost's image): cached and read-only in the animator, made once per source
            self.result_slot.put(Result(item, portrait, t1, calibrated, self.portrait_index,
                                        self.animator.source_uint8()))
        self.result_slot.close()

    def apply_commands(self) -> None:
        """Carry out the animator commands that keys queued (the inference thread calls this between frames)."""
        while self._commands:
            command, number = self._commands.popleft()
            if command == "reset":
                self.animator.reset_reference()
                self._reset_framer.set()
                self.log("reference reset: look straight ahead")
            elif command in ("next", "prev") and len(self._images) > 1:
                step = 1 if command == "next" else -1
                self.pick_portrait((self.portrait_index + step) % len(self._images))
            elif command == "pick":
                if number < len(self._images):
                    self.pick_portrait(number)
                else:
                    self.log(f"no portrait {number + 1}: --source has {len(self._images)}")
            elif command == "best":
                self.pick_best_match()
            elif command == "relative":
                self.animator.relative = not self.animator.relative
                self.log("motion: " + ("relative" if self.animator.relative else "absolute"))

    def _framed(self, path: Path) -> np.ndarray:
        """A portrait read as fomm-animate reads its source (a big JPEG decoded at twice the model's size at
        least) and framed by the one rule (``framing.frame_portrait``); its one-line message to ``log``."""
        if self._detector is None and self.options.source_crop in ("auto", "follow"):
            try:
                self._detector = FaceDetector()
            except BackendUnavailableError:
                pass  # frame_portrait says so in its message and takes the centre square
        image = to_uint8(load_source(path, max_side=2 * max(self.animator.frame_size)))
        framed = frame_portrait(image, self.options.source_crop, source=path, detector=self._detector)
        self.log(framed.message)
        self.portrait_boxes.append(framed.box)
        return framed.image

    def pick_portrait(self, index: int, why: str = "") -> None:
        """Animate portrait ``index`` from now on (the inference thread calls this; it owns the animator)."""
        self.portrait_index = index
        self.animator.set_source(self._images[index])
        self.log(f"portrait {index + 1} of {len(self._images)}: {self.portraits[index].name}{why}")

    def pick_best_match(self) -> None:
        """Pick the portrait whose pose is closest to the face in the newest camera crop: the keypoints of
        each, centred and scaled alike, compared by ``animator.pose_distances`` (the inference thread calls
        this). Says which it picked, and how close it and the runner-up were."""
        if self._last_crop is None:
            self.log("best match: no camera frame yet")
            return
        if self._portrait_kps is None:  # once, on first use: one keypoint inference per portrait
            self._portrait_kps = np.stack([self.animator.keypoints(self.animator.prepare(img)[None]).value[0]
                                           for img in self._images])
        distances = pose_distances(self.animator.keypoints(self._last_crop[None]), self._portrait_kps)
        order = np.argsort(distances, kind="stable")
        best = int(order[0])
        self.report.best_matches.append(best)
        runner_up = (f"; next closest: {self.portraits[order[1]].name}, {distances[order[1]]:.3f}"
                     if len(order) > 1 else "")
        self.pick_portrait(best, f" (best match for your pose: distance {distances[best]:.3f}{runner_up})")

    # -- presentation ----------------------------------------------------------------------------

    def compose(self, result: Result) -> np.ndarray:
        """Preview: camera frame with the crop box (and the ghost) | portrait, both at ``preview_height``;
        BGR uint8."""
        canvas = compose_preview(result, self.options.preview_height, show_box=self.options.show_box,
                                 ghost=self.options.ghost)
        if self.options.overlay:
            draw_lines(canvas, self.overlay_lines(result))
        return canvas

    def overlay_lines(self, result: Result) -> list[str]:
        """The overlay text for this result: rate, latency, stage times, drops, camera and calibration state."""
        ms = self.timer.mean_ms()
        latency = (result.t_done - result.framed.captured.t_capture) * 1000
        lines = [f"{self.timer.fps():4.1f} fps  latency {latency:5.0f} ms",
                 "  ".join(f"{k} {v:.0f} ms" for k, v in ms.items()),
                 f"dropped {self.captured_slot.dropped + self.framed_slot.dropped}"]
        if self.capture.status == "lost":
            lines.append(f"CAMERA LOST - reconnecting ({self.capture.reconnects})")
        if not result.calibrated:
            lines.append("look straight ahead: calibrating...")
        if len(self.portraits) > 1:
            lines.append(f"portrait {result.portrait_index + 1}/{len(self.portraits)}: "
                         f"{self.portraits[result.portrait_index].name}")
        if not self.framer.adjust.is_identity:
            lines.append(f"crop {self.framer.adjust.describe()}; c: undo")
        if self._show_help:
            lines += [f"{k}: {v}" for k, v in KEYS_HELP]
        else:
            lines.append("h: help")
        return lines

    def handle_key(self, key: int) -> bool:
        """Handle a key (see ``keys.KEYS_HELP``); False means quit."""
        action = key_action(key)
        if action == "quit":
            return False
        if action in ANIMATOR_ACTIONS:
            self._commands.append((action, portrait_number(key)))
        elif action in ("zoom-in", "zoom-out"):
            self.framer.adjust.zoom_by(1 if action == "zoom-in" else -1)
            self.log(f"crop: {self.framer.adjust.describe()}")
        elif action in MOVES:
            self.framer.adjust.move(*MOVES[action])
            self.log(f"crop: {self.framer.adjust.describe()}")
        elif action == "crop-reset":
            self.framer.adjust.reset()
            self.log("crop: automatic")
        elif action == "ghost":
            self.options.ghost = not self.options.ghost
        elif action == "box":
            self.options.show_box = not self.options.show_box
        elif action == "overlay":
            self.options.overlay = not self.options.overlay
        elif action == "mirror":
            self._mirror = not self._mirror
        elif action == "help":
            self._show_help = not self._show_help
            self.log(keys_help_text())
        return True

    def portrait_size(self) -> tuple[int, int]:
        """(width, height) of the portrait-alone frames: ``output_size``'s, or the model's frame size."""
        size = self.options.output_size
        if isinstance(size, tuple):
            return size
        h, w = self.animator.frame_size
        return w, h

    def portrait_frame(self, result: Result) -> np.ndarray:
        """The portrait alone at :meth:`portrait_size`, letterboxed; RGB uint8 (what the virtual camera gets,
        and the recording unless it records the preview)."""
        w, h = self.portrait_size()
        return result.portrait if result.portrait.shape[:2] == (h, w) else letterbox(result.portrait, (w, h))

    def _press_scripted_keys(self) -> bool:
        """Press the ``keys`` script's keys that are due at this shown frame; False means quit."""
        while self._keys and self._keys[0][0] <= self.report.shown:
            if not self.handle_key(self._keys.popleft()[1]):
                self.report.reason = "quit"
                return False
        return True

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> LiveReport:
        """Run until the camera ends, ``max_frames`` / ``max_seconds``, or the user quits; the report.

        Raises:
            Whatever a worker thread raised, after everything is shut down.
        """
        sinks = _Sinks()
        failed = False
        threads = [threading.Thread(target=self._guard(self._framing_loop), name="framing", daemon=True),
                   threading.Thread(target=self._guard(self._inference_loop), name="inference", daemon=True)]
        self._stop_signals.install()
        started = ended = time.perf_counter()
        try:
            self._start(threads, sinks)
            self._show_results(started, sinks)
        except KeyboardInterrupt:  # only when run outside the main thread's signal handling
            self.report.reason = "interrupted"
        except BaseException:  # a failure, not a stop: the recording is not published as if complete
            failed = True
            raise
        finally:
            ended = time.perf_counter()
            self._stop_threads(threads)
            try:
                self._close_sinks(sinks, failed, ended - started)
            finally:
                self._stop_signals.release(hold=self.hold_signals_after_stop)
        if self._errors:
            raise self._errors[0]
        return self._final_report(ended - started)

    def _start(self, threads: list[threading.Thread], sinks: _Sinks) -> None:
        """The virtual camera opened (first: it may be missing), then the capture and the worker threads."""
        if self.options.virtual_cam:
            sinks.vcam = open_virtual_cam(*self.portrait_size(), self.capture.fps)
        self.capture.start()
        for t in threads:
            t.start()

    def _show_results(self, started: float, sinks: _Sinks) -> None:
        """The caller's thread: each result shown, recorded and sent, until the session ends (``report.reason``
        says why, unless a worker failed)."""
        while not self._stop.is_set():
            if self._stop_signals.requested is not None:
                self.report.reason = f"stopped by {self._stop_signals.requested}"
                return
            result = self.result_slot.get(timeout=0.1)
            if result is None:
                if not self._wait_goes_on(started):
                    return
            elif not self._show(result, started, sinks):
                return

    def _wait_goes_on(self, started: float) -> bool:
        """No result yet: whether to wait on (the stream has not ended, no time limit, the window still open)."""
        opts = self.options
        if self.result_slot.closed:
            self.report.reason = "camera stream ended"
            return False
        if opts.max_seconds and time.perf_counter() - started > opts.max_seconds:
            self.report.reason = "time limit"
            return False
        return not opts.window or self._pump(WINDOW)

    def _show(self, result: Result, started: float, sinks: _Sinks) -> bool:
        """One result counted, shown, recorded and sent; False when the session ends with it."""
        opts = self.options
        now = time.perf_counter()
        self.timer.output(now)
        self.report.latencies_ms.append((now - result.framed.captured.t_capture) * 1000)
        self.report.shown += 1
        self.report.portraits_shown.append(result.portrait_index)
        if not self._press_scripted_keys():
            return False
        frame = self.compose(result)
        self._record_and_send(result, frame, now - started, sinks)
        if opts.window:
            cv2.imshow(WINDOW, frame)
            if not self._pump(WINDOW):
                return False
        if opts.max_frames and self.report.shown >= opts.max_frames:
            self.report.reason = "frame limit"
            return False
        if opts.max_seconds and now - started > opts.max_seconds:
            self.report.reason = "time limit"
            return False
        return True

    def _record_and_send(self, result: Result, frame: np.ndarray, at: float, sinks: _Sinks) -> None:
        """The result into the recording (opened at its first frame) at ``at`` seconds, and to the virtual camera."""
        opts = self.options
        alone = (self.portrait_frame(result) if sinks.vcam is not None
                 or (opts.output is not None and opts.output_size != "preview") else None)
        if opts.output is not None:
            recorded = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if opts.output_size == "preview" else alone
            if sinks.writer is None:
                sinks.writer = VideoWriter(opts.output, self.capture.fps, (recorded.shape[1], recorded.shape[0]))
                self.report.recorded_size = sinks.writer.size
            # Timed: each frame is held in the file for as long as it is on screen, so a session that
            # drops frames is recorded at its real pace, not as a time-lapse. The first frame also
            # covers the start-up before it: the file lasts as long as the session.
            sinks.writer.write(recorded, at)
        if sinks.vcam is not None:
            sinks.vcam.send(alone)

    def _stop_threads(self, threads: list[threading.Thread]) -> None:
        """Every stage told to stop, its slot closed, and the threads joined (5 s each at most)."""
        self._stop.set()
        self.capture.stop()
        for slot in (self.captured_slot, self.framed_slot, self.result_slot):
            slot.close()
        self.capture.join(timeout=5)
        for t in threads:
            t.join(timeout=5)

    def _close_sinks(self, sinks: _Sinks, failed: bool, seconds: float) -> None:
        """The recording finished (``seconds`` long) or, after a failure, thrown away; the virtual camera and
        the window closed."""
        if sinks.writer is not None:
            if self._errors or failed:
                sinks.writer.abort()
            else:
                self.report.output = sinks.writer.close(end=seconds)
                self.report.recorded_frames, self.report.recorded_seconds = sinks.writer.frames, sinks.writer.duration
        if sinks.vcam is not None:
            sinks.vcam.close()
        if self.options.window:
            cv2.destroyAllWindows()

    def _final_report(self, seconds: float) -> LiveReport:
        r = self.report
        r.captured, r.camera_status, r.reconnects = self.capture.captured, self.capture.status, self.capture.reconnects
        r.dropped_capture, r.dropped_framing = self.captured_slot.dropped, self.framed_slot.dropped
        r.stage_ms, r.fps = self.timer.mean_ms(), self.timer.fps()
        r.seconds = seconds
        return r

    def _ending(self, name: str) -> None:
        self.log(f"{name}: ending the session" + (f", finishing {self.options.output}"
                                                  if self.options.output is not None else ""))

    def _pump(self, window: str) -> bool:
        """Process window events; False when the user quits or closes the window."""
        key = cv2.waitKey(1) & 0xFF
        if key != 0xFF and not self.handle_key(key):
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


@dataclass
class _Sinks:
    """Where ``run`` sends results besides the window: the recording, opened with its first frame (a
    ``media.video.VideoWriter``), and the virtual camera."""

    writer: object | None = None
    vcam: object | None = None
