"""fomm-serve on Ray Serve: the same app, one copy per replica, across the machines of a Ray cluster.

Each replica builds the engines and the Starlette app of ``app.py`` when it starts (``serve.ingress`` with a
builder), so every replica holds its own engines, on its own GPU where ``num_gpus`` is 1. Ray Serve's proxy
routes each request, and each WebSocket connection for its whole life, to one replica: a live session stays
on the replica that holds its portrait and reference pose (sticky by construction). Autoscaling keeps the
replicas between ``min_replicas`` and ``max_replicas``, by requests in flight.

Ray is imported only inside these functions (the ``ray`` extra); the runtime never needs it otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core import signals
from . import refuse_image_bombs

# Live sessions and animations a replica serves at once before the autoscaler adds another replica.
TARGET_ONGOING_REQUESTS = 4


def build_application(onnx_dir: str | Path, backend: str, precision: str, *, providers=None, device=None,
                      compile: bool = False, max_batch: int = 8, token: str | None = None, limits=None, hosts=None, min_replicas: int = 1,
                      max_replicas: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0):
    """The Ray Serve application (``serve.run`` takes it)."""
    from ray import serve

    onnx_dir = str(Path(onnx_dir).resolve())

    def build_app():
        refuse_image_bombs()  # in the replica's process, before anything there loads OpenCV
        from .app import create_app
        from .engines import Engines

        engines = Engines(onnx_dir, backend, precision, providers=providers, device=device, compile=compile,
                          max_batch=max_batch)
        return create_app(engines, token=token, hosts=hosts, **({"limits": limits} if limits is not None else {}))

    options = {"name": "fomm-serve", "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus}}
    if min_replicas == max_replicas:
        options["num_replicas"] = min_replicas
    else:
        options["autoscaling_config"] = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                                         "target_ongoing_requests": TARGET_ONGOING_REQUESTS}
    # Every replica takes as many requests as its limits allow; the app itself answers 429 beyond them.
    options["max_ongoing_requests"] = 1000
    deployment = serve.deployment(serve.ingress(build_app)(), **options)
    return deployment.bind()


def run(application, host: str, port: int, *, echo=print) -> None:
    """Start Ray (the cluster at RAY_ADDRESS, or a local one) and Serve on ``host:port``; block until a signal."""
    import ray
    from ray import serve

    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application, name="fomm-serve", route_prefix="/", blocking=False)
        status = serve.status().applications["fomm-serve"].deployments["fomm-serve"]
        running = status.replica_states.get("RUNNING", 0)
        echo(f"fomm-serve: Ray Serve, {running} replica(s) running")
        shown = f"[{host}]" if ":" in host else host
        echo(f"fomm-serve: listening on http://{shown}:{port}/")
        # Ray's core installs its own SIGINT / SIGTERM handling, which ends this process without the clean-up
        # below: the local Ray cluster it started (and its replicas) would outlive it. Ours go in last.
        signals.install(signals.raise_stopped)  # unwind through the clean-up below (cli_common reports it)
        while True:
            time.sleep(1)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
