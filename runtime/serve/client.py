"""A Python client of fomm-serve's live protocol, and a launcher for a server in a subprocess.

The protocol of ``/v1/live`` (WebSocket, subprotocol ``fomm.v1``; the token as ``Authorization: Bearer`` or as a
``bearer.<token>`` subprotocol):

* client -> server, binary: one camera frame, JPEG (or PNG) bytes.
* client -> server, text: JSON control messages: ``{"type": "source", "image": "<base64 or data: URL>"}``
  (optional ``"crop"``: how the portrait is framed, fomm-animate's --crop choices, ``auto`` by default: around
  its face), ``{"type": "recalibrate"}``, ``{"type": "options", "relative": bool, "crop": "face" | "centre"}``
  (``crop`` there frames the camera frames).
* server -> client, binary: a 4-byte big-endian header length, the JSON header (``frame``, ``calibrated``,
  ``batch``, ``dropped``, ``face``, ``box``, ``server_ms``, ``inference_ms``, ``session``), the animated
  portrait as JPEG.
* server -> client, text: JSON acknowledgements (``{"type": <control type>, "ok": true}``; for ``source`` also
  ``"crop"`` (face, centre or none), ``"box"`` ([x, y, side] in the portrait's pixels, or null) and
  ``"message"``, the one line every command prints about the portrait's framing) and
  ``{"type": "error", "reason": "..."}``.

Used by the tests and by the load benchmark; also a starting point for a remote-GPU client of your own.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Reply:
    header: dict
    image: np.ndarray  # BGR uint8


def parse_reply(message: bytes) -> Reply:
    (n,) = struct.unpack(">I", message[:4])
    header = json.loads(message[4:4 + n])
    image = cv2.imdecode(np.frombuffer(message[4 + n:], np.uint8), cv2.IMREAD_COLOR)
    return Reply(header, image)


class LiveClient:
    """A blocking client for one live session (``websockets``' sync client)."""

    def __init__(self, url: str, token: str | None = None, *, token_as: str = "header") -> None:
        from websockets.sync.client import connect

        protocols = ["fomm.v1"]
        headers = {}
        if token is not None:
            if token_as == "header":
                headers["Authorization"] = f"Bearer {token}"
            else:
                protocols.append(f"bearer.{token}")
        ws_url = url.replace("http://", "ws://", 1).rstrip("/") + "/v1/live"
        self._connection = connect(ws_url, subprotocols=protocols, additional_headers=headers, max_size=32 << 20)
        self.ws = self._connection.__enter__()

    def control(self, message: dict) -> dict:
        """Send a control message; its acknowledgement (or error)."""
        self.ws.send(json.dumps(message))
        return json.loads(self.ws.recv())

    def set_source(self, image_bytes: bytes, crop: str | None = None) -> dict:
        """Send a portrait (``crop``: how the server frames it; its default, auto, when None)."""
        message = {"type": "source", "image": base64.b64encode(image_bytes).decode()}
        if crop is not None:
            message["crop"] = crop
        return self.control(message)

    def send(self, frame_bgr: np.ndarray | bytes, quality: int = 90) -> None:
        if isinstance(frame_bgr, np.ndarray):
            ok, buf = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            frame_bgr = buf.tobytes()
        self.ws.send(frame_bgr)

    def receive(self, timeout: float | None = None) -> Reply | dict:
        """The next message: a :class:`Reply`, or a JSON text message as a dict. ``timeout``: seconds to wait
        (TimeoutError after them); None waits for as long as it takes."""
        message = self.ws.recv(timeout=timeout)
        return json.loads(message) if isinstance(message, str) else parse_reply(message)

    def animate(self, frame_bgr: np.ndarray) -> Reply | dict:
        """Send one frame and wait for its reply (the newest-frame-wins client: one frame in flight)."""
        self.send(frame_bgr)
        return self.receive()

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> "LiveClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ServerProcess:
    """``fomm-serve`` in a subprocess on 127.0.0.1 and a free port; ``url`` once it listens.

    Args:
        args: fomm-serve's options (``--onnx DIR`` at least).
        env: extra environment variables.
        preexec_fn: run in the child before the server starts (e.g. to lower its descriptor limit).
    """

    def __init__(self, args: list[str], env: dict | None = None, startup_timeout: float = 120.0,
                 preexec_fn=None) -> None:
        cmd = [sys.executable, "-m", "fomm_deploy.runtime.serve.cli", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
        self.url: str | None = None
        self.banner: list[str] = []
        self.log: list[str] = []  # its stderr, read all along (a full pipe would block the server)
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.banner.append(line.rstrip())
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].strip().rstrip("/")
                    found.set()
            found.set()

        def drain() -> None:
            for line in self.proc.stderr:
                self.log.append(line.rstrip())

        threading.Thread(target=read, daemon=True).start()
        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not found.wait(startup_timeout) or self.url is None:
            self.stop()
            raise RuntimeError("fomm-serve did not start: " + "\n".join(self.banner + self.log))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

