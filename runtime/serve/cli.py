"""``fomm-serve``: the export's engines behind an HTTP and WebSocket server (uvicorn)."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import click

from ..core.cli_common import CONTEXT, user_errors, version_option
from ..core.errors import BackendUnavailableError, InputError
from ..core.options import (FiniteFloat, backend_option, compile_option, device_option, onnx_dir_option,
                            precision_option, providers_option)
from . import refuse_image_bombs

TOKEN_RE = re.compile(r"[A-Za-z0-9._~+-]{16,}")  # also valid as a WebSocket subprotocol (an RFC 7230 token)
TOKEN_ENV = "FOMM_SERVE_TOKEN"
# After SIGTERM, requests still running get this long to finish; then they are cancelled (no client holds the
# server up: a stalled upload, a slow reader).
SHUTDOWN_GRACE_S = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(host: str, token: str | None) -> None:
    """A token is well-formed, and present whenever the server listens beyond this machine.

    Raises:
        InputError: with the fix.
    """
    if token is not None and not TOKEN_RE.fullmatch(token):
        raise InputError(f"--token (or {TOKEN_ENV}) must be at least 16 characters of A-Z a-z 0-9 . _ ~ + -; "
                         "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if token is None and not is_loopback(host):
        raise InputError(f"--host {host} listens beyond this machine: give --token (or set {TOKEN_ENV}) so that "
                         "only holders of the token can use the server, or keep the default --host 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so a taken port is a one-line error and port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@click.command(context_settings=CONTEXT)
@onnx_dir_option()
@backend_option()
@precision_option()
@providers_option()
@device_option()
@compile_option(False, help="With --backend torch: torch.compile the graphs (default off here, also on CUDA: a "
                            "server meets many batch sizes, only live sessions' frame_step batches are padded to "
                            "fixed ones, and torch.compile(fullgraph=True) fails a call beyond its 8th shape of a "
                            "graph, torch._dynamo.config.recompile_limit).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: a free one; the URL is printed).")
@click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True, metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on every request and WebSocket (all but /healthz and "
                   "the page itself, which asks for it). At least 16 characters of A-Z a-z 0-9 . _ ~ + -.")
@click.option("--max-jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="POST /v1/animate requests served at once; more get 429.")
@click.option("--max-sessions", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Live WebSocket sessions at once; more are refused.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Most live sessions' frames per generator call (1 when the graphs have no dynamic batch).")
@click.option("--max-upload-mb", default=50.0, show_default=True, type=FiniteFloat(0, min_open=True),
              help="Largest POST /v1/animate request body.")
@click.option("--max-video-seconds", default=60.0, show_default=True, type=FiniteFloat(0, min_open=True),
              help="Longest driving video POST /v1/animate accepts.")
@click.option("--upload-timeout", default=60.0, show_default=True, type=FiniteFloat(0, min_open=True),
              metavar="SECONDS", help="Most seconds a POST /v1/animate body may take to arrive; then 408 and the "
                                      "job slot is free again.")
@click.option("--header-timeout", default=10.0, show_default=True, type=FiniteFloat(0, min_open=True),
              metavar="SECONDS", help="Most seconds a request's headers may take to arrive; then the connection is "
                                      "closed.")
@click.option("--max-connections", default=512, show_default=True, type=click.IntRange(1, 65536),
              help="Open connections at once (HTTP and WebSocket); more are closed at once. Fewer when the "
                   "descriptor limit (ulimit -n) cannot hold them.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host is NAME (repeatable; * for any). By default only the --host "
                   "address and localhost, 127.0.0.1, ::1 (with 0.0.0.0 or ::, also any IP address and this "
                   "machine's name): a page whose own name points at this server (DNS rebinding) is refused.")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="Also let browsers on ORIGIN (e.g. https://app.example) call the server (repeatable; * for "
                   "any). By default only the server's own page can: other web sites' requests and WebSockets "
                   "are refused.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Serve on Ray Serve (the 'ray' extra): the cluster at RAY_ADDRESS, or a local one; each replica "
                   "holds its own engines and each WebSocket session stays on one replica.")
@click.option("--replicas", default=None, metavar="N|MIN-MAX",
              help="With --ray: N replicas, or autoscaling between MIN and MAX (e.g. 1-4). Default 1.")
@click.option("--replica-gpus", default=0.0, show_default=True, type=FiniteFloat(0, 8),
              help="With --ray: GPUs per replica (num_gpus; 1 on a GPU cluster).")
@version_option()
@user_errors
def main(onnx_dir: Path, backend: str, precision: str, providers, device: str | None, compile: bool, host: str,
         port: int,
         token: str | None, max_jobs: int, max_sessions: int, max_batch: int, max_upload_mb: float,
         max_video_seconds: float, upload_timeout: float, header_timeout: float, max_connections: int,
         allow_hosts: tuple[str, ...], allow_origins: tuple[str, ...], use_ray: bool, replicas: str | None,
         replica_gpus: float) -> None:
    """Serve the exported model: a browser page for live puppeteering with the webcam, file animation over
    HTTP, health and Prometheus metrics.

    \b
    Endpoints:
      GET  /             the page: a portrait, your webcam, the animated portrait beside it
      POST /v1/animate   multipart fields source (image) and driving (video), fomm-animate's options as
                         further fields (crop, relative, start, end, ...) -> MP4 with the driving audio
      WS   /v1/live      live frames (JPEG) in, animated frames out
      GET  /healthz      liveness, no token needed
      GET  /metrics      Prometheus text: sessions, frames, per-stage latency, dropped frames

    \b
    Examples (exported/vox: an export of upstream's vox-cpk.pth.tar, see fomm-export --help):
      fomm-serve --onnx exported/vox                    # this machine only: http://127.0.0.1:8000/
      fomm-serve --onnx exported/vox --backend tensorrt --precision fp16          # on an NVIDIA GPU

    Beyond this machine the server needs a token. Make one, export it for the server, and send it with curl
    (the page asks for it; give it to the other machines' users):

    \b
      export FOMM_SERVE_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
      fomm-serve --onnx exported/vox --host 0.0.0.0 --port 8000 &
      curl --fail --retry 5 --retry-connrefused -H "Authorization: Bearer $FOMM_SERVE_TOKEN" \\
           -F source=@face.jpg -F driving=@talk.mp4 -F crop=centre http://127.0.0.1:8000/v1/animate -o result.mp4
      echo "token: $FOMM_SERVE_TOKEN"
    """
    try:
        import uvicorn
    except ImportError:
        raise BackendUnavailableError("fomm-serve needs its extra: pip install 'fomm-deploy[serve]'") from None

    refuse_image_bombs()
    # Imported only now: OpenCV reads its pixel limit when it loads, and these modules load it.
    from .app import Limits, create_app
    from .engines import Engines
    from .guards import HostPolicy, check_allow_origin, guarded_http_protocol, quiet_loggers, usable_connections

    check_token(host, token)
    for origin in allow_origins:
        check_allow_origin(origin)
    hosts = HostPolicy(host, allow_hosts, allow_origins)
    limits = Limits(max_jobs=max_jobs, max_sessions=max_sessions, max_upload_bytes=int(max_upload_mb * (1 << 20)),
                    max_video_seconds=max_video_seconds, upload_seconds=upload_timeout)
    if use_ray:
        _serve_on_ray(onnx_dir, backend, precision, providers, device, compile, max_batch, token, limits, hosts, host,
                      port, replicas, replica_gpus)
        return
    if replicas is not None or replica_gpus:
        raise InputError("--replicas and --replica-gpus are for --ray")
    sock = bind(host, port)
    try:
        engines = Engines(onnx_dir, backend, precision, providers=providers, device=device, compile=compile,
                          max_batch=max_batch)
        app = create_app(engines, token=token, limits=limits, hosts=hosts)
        connections = usable_connections(max_connections)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(f"fomm-serve: {backend} {precision}, graphs {engines.graphs}, "
                   f"batch up to {engines.max_batch}; token {'required' if token else 'off (localhost only)'}")
        if connections < max_connections:
            click.echo(f"fomm-serve: at most {connections} connections at once (ulimit -n allows no more)")
        click.echo(f"fomm-serve: listening on http://{shown}:{bound_port}/", nl=True)
        # A portrait's control message is base64 (4/3 of its bytes, and a data: URL's prefix); nothing else on a
        # socket is larger.
        config = uvicorn.Config(app, log_level="warning",
                                ws_max_size=max(16 << 20, limits.max_upload_bytes * 4 // 3 + (64 << 10)),
                                lifespan="on", http=guarded_http_protocol(connections, header_timeout),
                                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
        quiet_loggers()  # after uvicorn.Config, which configures the logging
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def parse_replicas(value: str | None) -> tuple[int, int]:
    """``--replicas``: ``N`` or ``MIN-MAX`` -> (min, max)."""
    if value is None:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
    low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not m or low < 1 or high < low:
        raise InputError(f"--replicas takes N or MIN-MAX with 1 <= MIN <= MAX, got {value!r}")
    return low, high


def _serve_on_ray(onnx_dir, backend, precision, providers, device, compile, max_batch, token, limits, hosts, host,
                  port, replicas, replica_gpus) -> None:
    low, high = parse_replicas(replicas)
    if port == 0:
        raise InputError("--ray needs a --port (Ray Serve's proxy cannot pick a free one)")
    from ..graphs import load_exported  # after refuse_image_bombs(), as main's imports

    load_exported(onnx_dir)  # a bad folder is an error here, not in every replica
    try:
        from .ray_app import build_application, run
        application = build_application(onnx_dir, backend, precision, providers=providers, device=device,
                                        compile=compile, max_batch=max_batch, token=token, limits=limits, hosts=hosts,
                                        min_replicas=low,
                                        max_replicas=high, num_gpus=replica_gpus)
    except ImportError:
        raise BackendUnavailableError("--ray needs Ray Serve: pip install 'fomm-deploy[ray]'") from None
    run(application, host, port, echo=click.echo)


if __name__ == "__main__":
    main()
