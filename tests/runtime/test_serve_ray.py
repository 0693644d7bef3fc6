"""fomm-serve --ray: the same app on Ray Serve, on a local Ray cluster that the command starts (two CPU replicas),
with two concurrent live sessions and a file animation through Ray Serve's proxy.

Needs the ``ray`` extra (``pip install -e '.[ray]'``, or ``make test EXTRAS=cpu,dev,ray``); skipped without it.
"""

from __future__ import annotations

import socket

import httpx
import numpy as np
import pytest

from fomm_deploy.runtime.serve.client import ServerProcess

from .test_serve import bgr_frames, media, two_sessions  # noqa: F401 - media is a fixture

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_two_replicas_two_sessions(bundled_export, media):  # noqa: F811
    pytest.importorskip("ray.serve", reason="fomm-serve --ray needs Ray Serve: pip install -e '.[ray]'")
    frames = bgr_frames(media["driving"])[:10]
    with ServerProcess(["--onnx", str(bundled_export), "--ray", "--replicas", "2", "--port", str(_free_port())],
                       startup_timeout=300) as server:
        assert any("2 replica(s) running" in line for line in server.banner), server.banner
        results = two_sessions(server.url, frames, media["portrait"].read_bytes())
        a = [r.image.astype(float) for r in results["a"]]
        b = [r.image.astype(float) for r in results["b"]]
        assert len(a) == len(b) == len(frames) and all(r.header["calibrated"] for r in results["a"] + results["b"])
        assert max(np.abs(x - a[0]).mean() for x in a[1:]) > 4.0  # it follows the motion
        assert min(np.abs(x - y).mean() for x, y in zip(a, b)) > 10  # each session its own portrait
        res = httpx.post(server.url + "/v1/animate", data={"crop": "centre", "end": "0.4"}, timeout=300,
                         files={"source": ("face.jpg", media["portrait"].read_bytes(), "image/jpeg"),
                                "driving": ("talk.mp4", media["driving"].read_bytes(), "video/mp4")})
        assert res.status_code == 200 and res.content[4:8] == b"ftyp", res.text
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert server.proc.returncode == 128 + 15  # SIGTERM: Serve and the local Ray cluster shut down first
