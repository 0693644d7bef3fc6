"""What keeps fomm-serve up when its clients are hostile or careless: the Host and Origin check, the uploads'
folder, a log that does not grow with an attack, and the connection layer's limits (header timeout, most
connections at once).

* :class:`HostOriginGuard`: an ASGI middleware in front of every route and socket. A request whose ``Host`` is
  not a name this server answers to is refused (DNS rebinding: a page on ``evil.example`` whose name now points
  at 127.0.0.1), and so is one whose ``Origin`` is another site's (any web page the user visits can send
  requests and open WebSockets to their local server; browsers add ``Origin`` to both).
* :class:`UploadSpace`: the uploads of each server process in one private folder, which the next start removes
  when the process that made it is gone (a killed server leaves nothing of its users' behind for long).
* :class:`QuietLog`: a logging filter that lets through a few records of each kind a minute and counts the rest.
* :func:`guarded_http_protocol`: uvicorn's h11 protocol with a deadline for each request's headers and a
  most-connections-at-once limit (uvicorn 0.55 has neither: its keep-alive timer starts only after a response).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..core.errors import InputError

log = logging.getLogger("fomm_deploy.serve")
WILDCARDS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


# ---- Host and Origin ----------------------------------------------------------------------------------------


def host_name(value: str) -> str:
    """A ``Host`` header (or an origin's network location) -> its host, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostPolicy:
    """The ``Host`` names and the ``Origin`` values the server accepts.

    Hosts: the address it listens on, the loopback names (localhost, 127.0.0.1, ::1), and ``allow_hosts``.
    Listening on every interface (0.0.0.0 or ::), any IP address and this machine's own names are accepted too:
    a rebinding page reaches the server under a name of its own, never under an address. ``*`` accepts any host.

    Origins: a request without ``Origin`` (curl, scripts, same-origin GETs) passes; a browser's request passes when
    its origin is the server's own (the origin's host and port are the request's ``Host``) or in
    ``allow_origins`` (exact, e.g. ``https://app.example:8443``; ``*`` accepts any).
    """

    def __init__(self, bind_host: str = "127.0.0.1", allow_hosts=(), allow_origins=()) -> None:
        self.any_host = "*" in allow_hosts
        self.any_origin = "*" in allow_origins
        self.wildcard = bind_host in WILDCARDS
        self.hosts = {host_name(h) for h in (bind_host, *LOOPBACK_NAMES, *allow_hosts) if h and h != "*"}
        if self.wildcard:
            self.hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.origins = {o.strip().rstrip("/").lower() for o in allow_origins if o != "*"}

    def host_allowed(self, host: str | None) -> bool:
        if host is None or self.any_host:  # no Host at all: HTTP/1.0, not a browser
            return True
        name = host_name(host)
        return name in self.hosts or (self.wildcard and _is_ip(name))

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and host is not None and parts.netloc == host.strip().lower()


def check_allow_origin(value: str) -> str:
    """``--allow-origin``: ``*`` or scheme://host[:port], nothing more.

    Raises:
        InputError: with the form it takes.
    """
    parts = urlsplit(value)
    if value != "*" and not (parts.scheme in ("http", "https") and parts.netloc and parts.path in ("", "/")
                             and not parts.query and not parts.fragment):
        raise InputError(f"--allow-origin takes an origin such as https://app.example or http://host:8080 "
                         f"(scheme, host, port; no path), or *; got {value!r}")
    return value


class HostOriginGuard:
    """ASGI middleware: 403 for a foreign ``Host`` or ``Origin``, on HTTP and on WebSocket handshakes alike."""

    def __init__(self, app, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        host, origin = headers.get("host"), headers.get("origin")
        if not self.policy.host_allowed(host):
            reason = (f"Host {host_name(host)!r} is not a name this server answers to; start it with "
                      "--allow-host NAME to answer to it")
        elif not self.policy.origin_allowed(origin, host):
            reason = ("requests from other web sites are refused (Origin is not this server's own); start it with "
                      "--allow-origin ORIGIN to let a site in")
        else:
            return await self.app(scope, receive, send)
        log.warning("refused a request to %s: %s", scope.get("path", "?"), reason.split(";")[0])
        if scope["type"] == "websocket":  # closed before accept: the handshake is answered with 403
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        body = json.dumps({"error": reason}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---- the uploads' folder ------------------------------------------------------------------------------------


class UploadSpace:
    """``<tmp>/fomm-serve-<uid>/<pid>/``: this server's uploads, one folder per request inside.

    The parent folder is private (0700, owned by this user, not a link), or the server does not start. At start,
    the folders of server processes that are gone (killed before they could clean up) are removed; at exit,
    this process's own.
    """

    def __init__(self, base: str | Path | None = None) -> None:
        self.root = Path(base or tempfile.gettempdir()) / f"fomm-serve-{os.getuid()}"
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(self.root)
        except OSError as exc:
            raise InputError(f"cannot make the uploads folder {self.root}: {exc.strerror}; set TMPDIR to a "
                             "writable folder") from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise InputError(f"{self.root} is not a private folder of this user (mode 0700); remove it, or set "
                             "TMPDIR to another folder")
        self.removed = self._remove_orphans()
        self.folder = self.root / str(os.getpid())
        shutil.rmtree(self.folder, ignore_errors=True)  # a gone process that had our PID
        self.folder.mkdir(mode=0o700)

    def _remove_orphans(self) -> int:
        removed = 0
        for child in self.root.iterdir():
            if not (child.name.isdigit() and child.is_dir() and not child.is_symlink()):
                continue  # not a folder this class made
            try:
                os.kill(int(child.name), 0)
                continue  # its server still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
        return removed

    def request_folder(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.folder))

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- the log ------------------------------------------------------------------------------------------------


class QuietLog(logging.Filter):
    """At most ``burst`` records of each kind (logger and message template) per ``window_s``; the next one let
    through says how many were left out. An attack that makes the same complaint a million times writes a few
    lines a minute, not a million."""

    def __init__(self, burst: int = 5, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[tuple[str, str], list] = {}  # kind -> [window start, let through, left out]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 1000:  # kinds are message templates, few; never let the table itself grow
                self._seen.clear()
            entry = self._seen.setdefault(key, [now, 0, 0])
            if now - entry[0] >= self.window_s:
                entry[0], entry[1] = now, 0
            if entry[1] >= self.burst:
                entry[2] += 1
                return False
            entry[1] += 1
            left_out, entry[2] = entry[2], 0
        if record.name == "asyncio" and record.exc_info:
            # asyncio's own complaints (e.g. "socket.accept() out of system resource" when a flood of connections
            # meets the descriptor limit: it pauses accepting for a second and goes on) become one line each:
            # their first line and the exception, no traceback.
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage().splitlines()[0]}: {type(exc).__name__}: {exc}"
            record.args, record.exc_info, record.exc_text = (), None, None
        if left_out:
            record.msg = f"({left_out} more like the next one were not logged) {record.msg}"
        return True


def quiet_loggers(names=("uvicorn.error", "asyncio", "fomm_deploy.serve")) -> QuietLog:
    quiet = QuietLog()
    for name in names:
        logging.getLogger(name).addFilter(quiet)
    return quiet


# ---- connections --------------------------------------------------------------------------------------------


def usable_connections(wanted: int, reserve: int = 64) -> int:
    """``wanted``, or fewer when the process's descriptor limit cannot hold that many besides the descriptors
    already open and ``reserve`` more (uploads, model files, threads)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 32
    return max(1, min(wanted, soft - open_now - reserve))


def guarded_http_protocol(max_connections: int, header_timeout: float):
    """uvicorn's h11 protocol class, with two guards: a connection beyond ``max_connections`` (HTTP and
    WebSocket together) is closed as soon as it is accepted, and a request whose headers are not complete
    ``header_timeout`` seconds after the connection opened (or after the previous response) is closed. Each
    refusal is logged through :class:`QuietLog`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("closed a connection over the limit of %d (--max-connections)", max_connections)
                transport.abort()
                return
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or a WebSocket
                return
            if self.conn.their_state is h11.IDLE:  # no complete request line and headers yet
                log.warning("closed a connection whose request headers took over %g s (--header-timeout)",
                            header_timeout)
                self.transport.abort()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request on this connection has as long

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol
