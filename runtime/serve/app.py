"""The fomm-serve ASGI app (Starlette): the page, health and metrics, file animation, live sessions.

Security defaults: with a token, every route but ``/healthz`` and the static page (which holds no data and
asks the user for the token) needs ``Authorization: Bearer <token>``. A browser cannot set that header on a
WebSocket, so ``/v1/live`` also takes the token as a ``bearer.<token>`` WebSocket subprotocol (the server
answers with ``fomm.v1``, never echoing the token). Every route and socket refuses a foreign ``Host`` or
``Origin`` (``guards.HostOriginGuard``). Uploads are read into this process's private folder (mode 0700,
``guards.UploadSpace``), decoded as images and videos, and removed when the request ends; nothing is ever
served back from there. Every bad input is a 4xx with a one-line JSON reason; an unexpected error is a 500
without details (the traceback goes to the server's log).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import math
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import click
import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from ..animate import animate as animate_file
from ..animate_cli import animate_main, options_from_cli
from ..core.errors import FommError, ImageError, InputError
from ..media.framing import PORTRAIT_CROPS, FramedPortrait, frame_portrait
from ..media.preprocess import IMAGE_SUFFIXES, decode_image, load_source, to_uint8
from ..media.samples import sample_face
from ..media.video import VIDEO_SUFFIXES, open_video
from ..webcam.framer import ready_to_calibrate
from . import MAX_IMAGE_SIDE
from .engines import Engines
from .guards import HostOriginGuard, HostPolicy, UploadSpace
from .metrics import Metrics, server_metrics
from .sessions import CROPS, SessionHub, SocketSession, decode_jpeg, encode_jpeg

log = logging.getLogger("fomm_deploy.serve")
STATIC = Path(__file__).resolve().parent / "static"
SUBPROTOCOL = "fomm.v1"
# fomm-animate's options a request may set as form fields (by their parameter names). The server's own
# options (export folder, backend, precision, devices) and the output's name and format are not the caller's.
FORM_OPTIONS = ("relative", "adapt_scale", "crop", "fit", "paste_back", "size", "best_frame", "reference_frame",
                "start", "end", "no_audio", "batch", "side_by_side")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
SOURCE_CROP_HEADER = "Fomm-Source-Crop"  # /v1/animate's answer: how the portrait was framed (frame_portrait's line)


@dataclass(frozen=True)
class Limits:
    """What one request or session may ask of the server."""

    max_jobs: int = 1  # concurrent POST /v1/animate; more get 429
    max_sessions: int = 8  # concurrent live sessions; more are refused (close code 1013)
    max_upload_bytes: int = 50 << 20  # a whole /v1/animate request body
    upload_seconds: float = 60.0  # the most a /v1/animate body may take to arrive; then 408
    max_image_side: int = MAX_IMAGE_SIDE  # source portraits (OpenCV's pixel limit: serve.refuse_image_bombs)
    max_video_side: int = 1920  # driving videos
    max_video_seconds: float = 60.0
    max_video_frames: int = 3600
    max_frame_bytes: int = 2 << 20  # one live camera frame
    max_frame_side: int = 1920
    portrait_decodes: int = 1  # live portraits decoded at once, server-wide (a 4096^2 px one peaks near 600 MB)


class Problem(HTTPException):
    """A request the server refuses: ``status`` and a one-line ``detail``."""


def create_app(engines: Engines, *, token: str | None = None, limits: Limits = Limits(),
               metrics: Metrics | None = None, hosts: HostPolicy | None = None,
               uploads: UploadSpace | None = None) -> Starlette:
    """The app over loaded engines. ``token``: required on every request and socket (but /healthz, /).
    ``hosts``: the Host names and Origins answered (default: the loopback names, and no other site's origin).
    ``uploads``: where uploads go (default: this process's folder of a new :class:`UploadSpace`)."""
    server = ServeApp(engines, token, limits, metrics or server_metrics(), uploads or UploadSpace())
    routes = [Route("/", server.page), Route("/healthz", healthz), Route("/metrics", server.metrics_route),
              Route("/v1/animate", server.animate, methods=["POST"]), WebSocketRoute("/v1/live", server.live)]
    return Starlette(routes=routes, middleware=[Middleware(HostOriginGuard, policy=hosts or HostPolicy())],
                     exception_handlers={HTTPException: server.problem, FommError: user_error, Exception: bug},
                     lifespan=server.lifespan)


class ServeApp:
    """The app's state and its routes: the engines, the token and the limits, the jobs and sessions running."""

    def __init__(self, engines: Engines, token: str | None, limits: Limits, metrics: Metrics, uploads: UploadSpace):
        self.engines, self.token, self.limits, self.metrics = engines, token, limits, metrics
        self.uploads = uploads
        self.portrait_decodes: asyncio.Semaphore | None = None  # made on the server's loop
        self.hub = SessionHub(engines, metrics)
        self.jobs = 0
        self.sessions = 0
        # the bundled portrait, framed by the rule every portrait is (framing.frame_portrait), once
        self.default_source = frame_portrait(to_uint8(sample_face()), source="the bundled portrait").image
        self.index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    def authorised(self, headers, extra: str | None = None) -> bool:
        return self.token is None or token_matches(self.token, _bearer(headers.get("authorization"))) or \
            token_matches(self.token, extra)

    def require_token(self, request: Request) -> None:
        if not self.authorised(request.headers):
            raise Problem(401, "missing or wrong token: send Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": "Bearer"})

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self.index_html,
                            headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                     "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                     "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"})

    async def metrics_route(self, request: Request) -> Response:
        self.require_token(request)
        self.metrics.set("fomm_serve_sessions", self.sessions)
        self.metrics.set("fomm_serve_animate_active", self.jobs)
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def animate(self, request: Request) -> Response:
        """POST /v1/animate: one job slot of ``max_jobs``, its uploads removed when the request ends."""
        self.require_token(request)
        if self.jobs >= self.limits.max_jobs:
            self.metrics.inc("fomm_serve_animate_requests_total", code="429")
            return _error(429, f"busy: {self.jobs} animation(s) running, the server's limit (--max-jobs); "
                               "retry later", {"Retry-After": "5"})
        self.jobs += 1
        folders: list[Path] = []
        started = time.perf_counter()
        try:
            response = await self._animate(request, folders)
            self.metrics.observe("fomm_serve_animate_seconds", time.perf_counter() - started)
            return response
        finally:
            self.jobs -= 1
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)

    async def _animate(self, request: Request, folders: list) -> Response:
        _check_upload_headers(request, self.limits)
        tmp = self.uploads.request_folder()  # mode 0700: private to the server's user
        folders.append(tmp)
        source, driving, fields = await self._receive_upload(request, tmp)
        out = tmp / "result.mp4"
        options = _within_limits(parse_animate_form(fields, source, driving, out), self.limits)
        messages: list[str] = []  # fomm-animate's: the portrait's framing line goes back as a header
        try:
            await run_in_threadpool(_check_media, source, driving, self.limits)
            await run_in_threadpool(lambda: animate_file(source, driving, str(out), options_from_cli(options),
                                                         log=messages.append, exported=self.engines.exported,
                                                         animator_factory=self.engines.animator))
        except FommError as exc:  # the user's input: its one-line reason, without the server's paths
            raise Problem(400, " ".join(str(exc).replace(str(tmp) + "/", "").split())) from None
        self.metrics.inc("fomm_serve_animate_requests_total", code="200")
        headers = {"Content-Disposition": 'attachment; filename="animated.mp4"'}
        framing = next((m for m in messages if "source crop " in m), None)
        if framing is not None:  # e.g. "source crop source.png: x=134 y=15 side=179 (face)"
            headers[SOURCE_CROP_HEADER] = " ".join(framing.replace(str(tmp) + "/", "").split()).encode(
                "ascii", "replace").decode()
        return Response(out.read_bytes(), media_type="video/mp4", headers=headers)

    async def _receive_upload(self, request: Request, tmp: Path) -> tuple[Path, Path, dict[str, str]]:
        """The multipart body, within the byte limit: the source and the driving saved in ``tmp``, the fields."""
        body = _limited(request, self.limits.max_upload_bytes, self.limits.upload_seconds)
        parser = MultiPartParser(request.headers, body, max_files=3,
                                 max_fields=len(FORM_OPTIONS), max_part_size=1 << 16)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise Problem(400, f"malformed multipart form: {exc.message}") from None
        except ClientDisconnect:
            raise Problem(400, "the client went away during the upload") from None
        try:
            return _save_form(form, tmp)
        finally:
            await form.close()

    async def live(self, ws: WebSocket) -> None:
        """/v1/live: one session of ``max_sessions``, after the token check."""
        try:  # a client may leave at any point, even before it is let in: not worth a line in the log
            if not await self._admit(ws):
                return
        except WebSocketDisconnect:
            return
        self.sessions += 1
        self.metrics.inc("fomm_serve_sessions_total")
        try:
            session = await run_in_threadpool(SocketSession, self.engines, self.default_source)
            await LiveChannel(ws, session, self.hub, self.limits, self.metrics, self.portrait_decodes).run()
        except WebSocketDisconnect:
            pass
        finally:
            self.sessions -= 1

    async def _admit(self, ws: WebSocket) -> bool:
        """Whether the socket is let in: closed with the reason when its token is wrong or the server is full."""
        offered = ws.scope.get("subprotocols") or []
        given = next((p[len("bearer."):] for p in offered if p.startswith("bearer.")), None)
        if not self.authorised(ws.headers, given):
            await ws.close(code=1008, reason="missing or wrong token")
            return False
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if self.sessions >= self.limits.max_sessions:  # accepted first, so that the client can read why
            await ws.close(code=1013,
                           reason=f"busy: the server holds its limit of {self.limits.max_sessions} sessions")
            return False
        return True

    async def problem(self, request: Request, exc: HTTPException) -> Response:
        if request.url.path == "/v1/animate":
            self.metrics.inc("fomm_serve_animate_requests_total", code=str(exc.status_code))
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.portrait_decodes = asyncio.Semaphore(self.limits.portrait_decodes)
        try:
            yield
        finally:
            try:
                await run_in_threadpool(self.hub.close)
            finally:
                self.uploads.close()


class LiveChannel:
    """One live session's socket: camera frames in (the newest one wins), animated frames and replies out.

    Two tasks share it: ``receive`` reads the socket (frames and control messages), ``process`` animates the
    newest frame and sends the result; one lock keeps their messages whole. Once a send finds the client gone,
    neither sends again: both end quietly (a client that leaves mid-frame is no error of the server's).
    """

    def __init__(self, ws: WebSocket, session: SocketSession, hub: SessionHub, limits: Limits, metrics: Metrics,
                 portrait_decodes: asyncio.Semaphore | None = None):
        self.ws, self.session, self.hub, self.limits, self.metrics = ws, session, hub, limits, metrics
        self.portrait_decodes = portrait_decodes or asyncio.Semaphore(limits.portrait_decodes)
        self.send_lock = asyncio.Lock()
        self.newest: dict = {}
        self.arrived = asyncio.Event()
        self.gone = asyncio.Event()
        self.closed = False  # a send found the client gone

    async def run(self) -> None:
        receiver = asyncio.create_task(self.receive())
        try:
            await self.process()
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await receiver  # its own error, if it had one that is not the client leaving, is raised here

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        """One message to the client; ``WebSocketDisconnect`` once the client is gone (for either task)."""
        async with self.send_lock:
            if self.closed:
                raise WebSocketDisconnect(1006)
            try:
                await (self.ws.send_text(text) if text is not None else self.ws.send_bytes(data))
            except (WebSocketDisconnect, WebSocketDisconnected):
                self.closed = True
                raise WebSocketDisconnect(1006) from None

    async def send_json(self, obj: dict) -> None:
        await self._send(text=json.dumps(obj))

    async def receive(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    await self._take_frame(msg["bytes"])
                elif msg.get("text") is not None:
                    try:
                        await self.control(msg["text"])
                    except FommError as exc:
                        await self.send_json({"type": "error", "reason": str(exc)})
        finally:
            self.gone.set()
            self.arrived.set()

    async def _take_frame(self, data: bytes) -> None:
        if len(data) > self.limits.max_frame_bytes:
            await self.send_json({"type": "error", "reason": f"frame larger than {self.limits.max_frame_bytes} bytes"})
            return
        if "frame" in self.newest:  # not yet picked up: the newer one wins
            self.session.dropped += 1
            self.metrics.inc("fomm_serve_frames_dropped_total")
        self.newest["frame"] = (data, time.perf_counter())
        self.arrived.set()

    async def control(self, text: str) -> None:
        # A portrait's message is large: parsed off the event loop, which every client shares.
        msg = parse_control(text) if len(text) < 4096 else await run_in_threadpool(parse_control, text)
        kind = msg["type"]
        if kind == "source":
            async with self.portrait_decodes:  # each decode may take 4096^2 px for a moment; a few at once
                framed, model = await run_in_threadpool(_portrait_frame, msg, self.limits, self.session)
            self.session.set_source(model)  # the model-sized frame; it replaces any still waiting
            await self.send_json({"type": "source", "ok": True, "crop": framed.how,
                                  "box": None if framed.box is None else list(framed.box),
                                  "message": framed.message})
        elif kind == "recalibrate":
            self.session.recalibrate()
            await self.send_json({"type": "recalibrate", "ok": True})
        elif kind == "options":
            if "relative" in msg:
                self.session.set_relative(msg["relative"])
            if "crop" in msg:
                self.session.set_crop(msg["crop"])
            await self.send_json({"type": "options", "ok": True})

    async def process(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if self.gone.is_set():
                return
            item = self.newest.pop("frame", None)
            if item is not None:
                await self._answer(*item)

    async def _answer(self, data: bytes, t_in: float) -> None:
        """One camera frame animated and sent back with its header; a bad frame gets its reason instead."""
        session = self.session
        try:
            t0 = time.perf_counter()
            bgr = await run_in_threadpool(decode_jpeg, data, self.limits.max_frame_side)
            t1 = time.perf_counter()
            box, found, stable, model = await run_in_threadpool(session.frame, bgr)
            t2 = time.perf_counter()
            result = await asyncio.wrap_future(self.hub.submit(session, model, ready_to_calibrate(found, stable)))
            if result is None:  # replaced by the session's next frame
                return
            t3 = time.perf_counter()
            jpeg = await run_in_threadpool(encode_jpeg, result.portrait)
            t4 = time.perf_counter()
        except FommError as exc:
            await self.send_json({"type": "error", "reason": str(exc)})
            return
        for stage, seconds in (("decode", t1 - t0), ("framing", t2 - t1), ("encode", t4 - t3)):
            self.metrics.observe("fomm_serve_stage_seconds", seconds, stage=stage)
        session.frames += 1
        self.metrics.inc("fomm_serve_frames_total")
        header = json.dumps({"frame": session.frames, "calibrated": result.calibrated, "batch": result.batch,
                             "dropped": session.dropped, "face": bool(found), "box": list(box),
                             "server_ms": round((t4 - t_in) * 1000, 2),
                             "inference_ms": round(result.inference_s * 1000, 2),
                             "session": session.id}).encode()
        await self._send(data=struct.pack(">I", len(header)) + header + jpeg)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def user_error(request: Request, exc: FommError) -> Response:
    return _error(400, " ".join(str(exc).split()))


async def bug(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return _error(500, "internal error (the server's log has the details)")


def _error(status: int, reason: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _bearer(value: str | None) -> str | None:
    scheme, _, credential = (value or "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def token_matches(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def parse_animate_form(fields: dict[str, str], source: Path, driving: Path, out: Path) -> dict:
    """Form fields -> fomm-animate's parameters, parsed and checked by fomm-animate's own click options.

    Flags take true/false (1/0, yes/no, on/off); ``relative=false`` is ``--absolute``.

    Raises:
        Problem: an unknown field, or a value fomm-animate refuses (its one-line message).
    """
    params = {p.name: p for p in animate_main.params}
    args = ["--source", str(source), "--driving", str(driving), "--out", str(out)]
    for name, raw in fields.items():
        if name not in FORM_OPTIONS:
            raise Problem(400, f"unknown form field {name!r}; the fields are source, driving and "
                               + ", ".join(FORM_OPTIONS))
        opt = params[name]
        if opt.is_flag:
            value = raw.strip().lower()
            if value not in TRUE + FALSE:
                raise Problem(400, f"form field {name!r} takes true or false, got {raw!r}")
            if value in TRUE:
                args.append(opt.opts[0])
            elif opt.secondary_opts:
                args.append(opt.secondary_opts[0])
        else:
            if not _finite_or_not_a_number(raw):  # click takes "nan" and "inf" as floats, and no range holds them
                raise Problem(400, f"form field {name!r} takes a finite number, got {raw!r}")
            args += [opt.opts[0], raw]
    try:
        ctx = animate_main.make_context("fomm-animate", args)
    except click.ClickException as exc:
        raise Problem(400, _form_message(exc)) from None
    return {k: ctx.params[k] for k in FORM_OPTIONS}


def _finite_or_not_a_number(raw: str) -> bool:
    """False for the text of NaN or an infinity ("nan", "-inf", "Infinity", "1e999"), True for anything else."""
    try:
        return math.isfinite(float(raw))
    except ValueError:
        return True


def _form_message(exc: click.ClickException) -> str:
    """click's message about a refused option, in the form's terms: the field's name, the caller's value."""
    message = " ".join(exc.format_message().split())
    param = getattr(exc, "param", None)
    if param is not None:
        for opt in param.opts + param.secondary_opts:  # '--reference-frame' -> 'reference_frame'
            message = message.replace(f"'{opt}'", f"'{param.name}'")
    return message


def _check_upload_headers(request: Request, limits: Limits) -> None:
    """A multipart form whose announced length is within the limit (``_limited`` counts what really arrives)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Problem(415, "send multipart/form-data with the fields source (an image) and driving (a video)")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limits.max_upload_bytes):
        raise Problem(413, f"the request is larger than the limit of {limits.max_upload_bytes} bytes")


async def _limited(request: Request, limit: int, seconds: float):
    """The request's body, refused (413) past ``limit`` bytes and (408) when it has not all arrived ``seconds``
    after the request began: a client that stalls, or trickles, its upload cannot hold a job slot for longer."""
    received = 0
    chunks = request.stream().__aiter__()
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Problem(408, f"the upload did not arrive within {seconds:g} s (--upload-timeout)",
                          headers={"Connection": "close"}) from None
        received += len(chunk)
        if received > limit:
            raise Problem(413, f"the request is larger than the limit of {limit} bytes")
        yield chunk


def _save_form(form, folder: Path) -> tuple[Path, Path, dict[str, str]]:
    """The form's two files, source and driving, saved in ``folder``, and its other fields (each given once)."""
    files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
    fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
    if len(form.multi_items()) != len(set(form.keys())):
        raise Problem(400, "a form field is given twice")
    for name in ("source", "driving"):
        if name not in files:
            raise Problem(400, f"form field {name!r} is missing (or not a file): send the "
                               f"{'portrait image' if name == 'source' else 'driving video'} as a file")
        fields.pop(name, None)
    for name in set(files) - {"source", "driving"}:
        raise Problem(400, f"unexpected file field {name!r}; files go in source and driving")
    source = _save(files["source"], folder, "source", IMAGE_SUFFIXES)
    driving = _save(files["driving"], folder, "driving", VIDEO_SUFFIXES)
    return source, driving, fields


def _save(upload: UploadFile, folder: Path, name: str, suffixes) -> Path:
    """An uploaded file into ``folder`` under our own name (the client's name gives at most a known suffix)."""
    suffix = Path(upload.filename or "").suffix.lower()
    path = folder / (name + (suffix if suffix in suffixes else ""))
    upload.file.seek(0)
    with open(path, "xb") as f:
        shutil.copyfileobj(upload.file, f)
    if path.stat().st_size == 0:
        raise Problem(400, f"form field {name!r} is an empty file")
    return path


def _within_limits(options: dict, limits: Limits) -> dict:
    """The animation's options with the driving clip ending by the server's limit of seconds."""
    if options["start"] >= limits.max_video_seconds:
        raise Problem(413, f"start {options['start']:g} s is past the server's limit of "
                           f"{limits.max_video_seconds:g} s of driving video")
    if options["end"] is None or options["end"] > limits.max_video_seconds:
        options["end"] = limits.max_video_seconds  # whatever the container claims, no more is animated
    return options


def _check_media(source: Path, driving: Path, limits: Limits) -> None:
    """The uploads are an image and a video within the limits (decoded; ``FommError`` for unusable ones)."""
    try:
        image = load_source(source)  # the animation decodes it again, reduced when large
    except cv2.error:  # more pixels than OPENCV_IO_MAX_IMAGE_PIXELS (fomm-serve sets it)
        raise Problem(413, f"the source image is too large; at most {limits.max_image_side} px on a side") from None
    if max(image.shape[:2]) > limits.max_image_side:
        raise Problem(413, f"the source is {image.shape[1]}x{image.shape[0]}; at most {limits.max_image_side} px "
                           "on a side")
    cap, info = open_video(driving)
    cap.release()
    if max(info.width, info.height) > limits.max_video_side:
        raise Problem(413, f"the driving video is {info.width}x{info.height}; at most {limits.max_video_side} px "
                           "on a side")
    if info.duration > limits.max_video_seconds or info.frame_count > limits.max_video_frames:
        raise Problem(413, f"the driving video is {info.duration:.1f} s ({info.frame_count} frames); at most "
                           f"{limits.max_video_seconds:g} s and {limits.max_video_frames} frames")


def _portrait_bytes(msg: dict, limits: Limits) -> bytes:
    """The portrait a ``source`` control message carries: base64 (or a data: URL), within the upload limit."""
    data = msg.get("image", "")
    if not isinstance(data, str):
        raise InputError("'image' is a base64 string (or a data: URL)")
    try:
        raw = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=True)
    except (binascii.Error, IndexError):
        raise InputError("'image' is not valid base64") from None
    if len(raw) > limits.max_upload_bytes:
        raise InputError(f"the portrait is larger than {limits.max_upload_bytes} bytes")
    return raw


# A live control message: its type, and each field it may carry with the JSON type that field takes.
CONTROL_FIELDS = {"source": {"image": str, "crop": str}, "recalibrate": {}, "options": {"relative": bool, "crop": str}}


def _refuse_constant(name: str):
    raise InputError(f"{name} is not a number a control message may carry; send finite numbers only")


def parse_control(text: str) -> dict:
    """A live control message, parsed and checked: a JSON object with a known ``type`` and only that type's
    fields, each of its own JSON type (``"relative": "false"`` is refused, not taken as true; so is any array
    or object in a field, whatever its depth); no NaN or Infinity anywhere. A ``crop`` is one of its message's
    choices (a source's: fomm-animate's --crop), so a bad one costs no image decode.

    Raises:
        InputError: what is wrong, in one line.
    """
    try:
        msg = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputError("control messages are flat JSON objects; this one is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("control messages are JSON objects with a 'type'") from None
    if not isinstance(msg, dict):
        raise InputError("control messages are JSON objects with a 'type'")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in CONTROL_FIELDS:
        raise InputError(f"unknown control message type {kind!r}; use source, recalibrate or options")
    fields = CONTROL_FIELDS[kind]
    for name, value in msg.items():
        if name == "type":
            continue
        if name not in fields:
            raise InputError(f"a {kind} message has no field {name!r}"
                             + (f"; its fields are {', '.join(fields)}" if fields else ""))
        if type(value) is not fields[name]:  # bool is not int, and "false" is not False
            wanted = {str: "a string", bool: "true or false"}[fields[name]]
            raise InputError(f"{name!r} takes {wanted}, got {json.dumps(value)[:40]}")
    if kind == "options" and "crop" in msg and msg["crop"] not in CROPS:
        raise InputError(f"crop is one of {', '.join(CROPS)}")
    if kind == "source" and "crop" in msg and msg["crop"] not in PORTRAIT_CROPS:  # before the image is decoded
        raise InputError(f"crop must be one of {', '.join(PORTRAIT_CROPS)}, got {json.dumps(msg['crop'])[:40]}")
    return msg


def _portrait_frame(msg: dict, limits: Limits, session: SocketSession) -> tuple[FramedPortrait, np.ndarray]:
    """A ``source`` message's portrait -> how it was framed, and the session's model-sized frame of it: decoded,
    checked, framed as every portrait is (``framing.frame_portrait``: ``crop`` is fomm-animate's --crop choice,
    auto by default) and reduced here, so that a session keeps no more than the model's size of it."""
    image = _load_portrait_bytes(_portrait_bytes(msg, limits), limits)
    framed = frame_portrait(to_uint8(image), msg.get("crop", "auto"))
    return framed, session.prepare_source(framed.image)


def _load_portrait_bytes(data: bytes, limits: Limits) -> np.ndarray:
    """A portrait sent over a live session -> RGB float32, through the same decoder as files."""
    try:  # at full size, so the side limit sees the real size (no reduced decode)
        image = decode_image(np.frombuffer(data, np.uint8), "the portrait")
    except cv2.error:  # more pixels than OPENCV_IO_MAX_IMAGE_PIXELS
        raise ImageError(f"the portrait is too large; at most {limits.max_image_side} px on a side") from None
    if max(image.shape[:2]) > limits.max_image_side:
        raise ImageError(f"the portrait is {image.shape[1]}x{image.shape[0]}; at most {limits.max_image_side} px")
    return image
