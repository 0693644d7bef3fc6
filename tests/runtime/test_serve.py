"""fomm-serve end to end: a real server (uvicorn in a subprocess on 127.0.0.1), real HTTP and WebSocket clients,
the bundled trained model on ONNX Runtime, media made with ffmpeg."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from fomm_deploy.runtime.serve.client import LiveClient, ServerProcess
from fomm_deploy.runtime.media.video import ffmpeg_exe, has_audio, iter_frames, open_video

from ..media_corpus import count_frames

DATA = Path(__file__).resolve().parents[1] / "data"
TOKEN = "test-token-0123456789abcdef"
UPLOAD_MB = 1.5


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A portrait (JPEG) and a driving clip with audio (the sample face under head motion, 30 frames, a tone)."""
    from fomm_deploy.runtime.media.samples import write_sample_driving_video

    folder = tmp_path_factory.mktemp("serve_media")
    portrait = folder / "portrait.jpg"
    cv2.imwrite(str(portrait), cv2.resize(cv2.imread(str(DATA / "astronaut.png")), (256, 256)))
    driving = write_sample_driving_video(folder / "driving.mp4", frames=30, size=128, seed=3)
    return {"portrait": portrait, "driving": driving, "folder": folder}


@pytest.fixture(scope="module")
def server(bundled_export):
    with ServerProcess(["--onnx", str(bundled_export), "--max-jobs", "1", "--max-upload-mb", str(UPLOAD_MB),
                        "--max-video-seconds", "5", "--max-sessions", "4"]) as s:
        yield s


@pytest.fixture(scope="module")
def token_server(bundled_export):
    with ServerProcess(["--onnx", str(bundled_export)], env={"FOMM_SERVE_TOKEN": TOKEN}) as s:
        yield s


def post_animate(url: str, media: dict, fields: dict | None = None, files: dict | None = None, headers=None,
                 timeout: float = 300.0) -> httpx.Response:
    if files is None:
        files = {"source": ("face.jpg", media["portrait"].read_bytes(), "image/jpeg"),
                 "driving": ("talk.mp4", media["driving"].read_bytes(), "video/mp4")}
    return httpx.post(url + "/v1/animate", data=fields or {}, files=files, headers=headers, timeout=timeout)


def metric(url: str, name: str, headers=None) -> float:
    text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def wait_for(condition, what: str, deadline_s: float = 60.0) -> None:
    """Poll until ``condition()`` holds (a deadline against hanging, not a speed check)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def assert_one_line_reason(res: httpx.Response, status: int) -> str:
    assert res.status_code == status, (res.status_code, res.text)
    reason = res.json()["error"]
    assert reason and "\n" not in reason and "Traceback" not in reason and "/tmp" not in reason, reason
    return reason


def bgr_frames(path: Path) -> list[np.ndarray]:
    return [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in iter_frames(path)]


# ---- health, metrics, page ---------------------------------------------------------------------------


def test_healthz_and_metrics(server):
    res = httpx.get(server.url + "/healthz")
    assert res.status_code == 200 and res.json() == {"status": "ok"}
    res = httpx.get(server.url + "/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    for family, kind in (("fomm_serve_sessions", "gauge"), ("fomm_serve_frames_total", "counter"),
                         ("fomm_serve_frames_dropped_total", "counter"), ("fomm_serve_stage_seconds", "histogram"),
                         ("fomm_serve_animate_requests_total", "counter")):
        assert f"# TYPE {family} {kind}" in res.text


def test_metrics_render_cumulative_histograms_and_labelled_counters():
    """The exposition format: a histogram's buckets count every value at or below their bound (so they never
    decrease), +Inf and _count are all values, _sum their total; counters keep one line per label set."""
    from fomm_deploy.runtime.serve.metrics import Metrics

    m = Metrics()
    m.describe("t_seconds", "histogram", "test", buckets=(0.1, 0.5, 1.0))
    m.describe("t_total", "counter", "test")
    for v in (0.05, 0.3, 0.3, 0.7, 2.0):
        m.observe("t_seconds", v, stage="x")
    m.inc("t_total", code="200")
    m.inc("t_total", 2, code="200")
    m.inc("t_total", code="429")
    lines = dict(line.rsplit(" ", 1) for line in m.render().splitlines() if not line.startswith("#"))
    buckets = [float(lines[f't_seconds_bucket{{le="{le}",stage="x"}}']) for le in ("0.1", "0.5", "1", "+Inf")]
    assert buckets == [1, 3, 4, 5]
    assert float(lines['t_seconds_count{stage="x"}']) == 5
    assert float(lines['t_seconds_sum{stage="x"}']) == pytest.approx(3.35)
    assert float(lines['t_total{code="200"}']) == 3 and float(lines['t_total{code="429"}']) == 1


def test_page_is_self_contained(server):
    res = httpx.get(server.url + "/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = res.text
    for needed in ("getUserMedia", "WebSocket", "/v1/live", 'id="recalibrate"', 'id="motion"', 'id="fps"', 'id="rtt"'):
        assert needed in page
    assert "src=\"http" not in page and "href=\"http" not in page and "@import" not in page  # no CDN


# ---- POST /v1/animate ------------------------------------------------------------------------------


def test_animate_end_to_end(server, media, bundled_export, tmp_path):
    res = post_animate(server.url, media, {"crop": "centre"})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "video/mp4"
    out = tmp_path / "served.mp4"
    out.write_bytes(res.content)
    assert count_frames(out) == count_frames(media["driving"]) == 30
    assert has_audio(out)
    # The frames are fomm-animate's: the same call in this process, through the CLI's own code path.
    from fomm_deploy.runtime.animate import AnimateOptions, animate

    local = tmp_path / "local.mp4"
    animate(media["portrait"], media["driving"], str(local), AnimateOptions(onnx_dir=bundled_export, crop="centre"))
    served, expected = np.stack(list(iter_frames(out))), np.stack(list(iter_frames(local)))
    assert served.shape == expected.shape == (30, 64, 64, 3)
    assert np.abs(served.astype(float) - expected).mean() < 1.0
    assert served.std(axis=0).mean() > 2.0  # it moves


def test_animate_form_options_reach_the_animation(server, media, tmp_path):
    res = post_animate(server.url, media, {"crop": "centre", "end": "0.4", "no_audio": "true", "size": "96"})
    assert res.status_code == 200, res.text
    out = tmp_path / "part.mp4"
    out.write_bytes(res.content)
    _, info = open_video(out)
    assert count_frames(out) == 10 and (info.width, info.height) == (96, 96) and not has_audio(out)


@pytest.mark.parametrize("case", ["no driving", "unknown field", "bad choice", "out of range", "contradiction",
                                  "not an image", "not a video", "empty file", "flag value", "twice"])
def test_animate_bad_input_is_a_4xx_with_one_line(server, media, case):
    portrait = ("face.jpg", media["portrait"].read_bytes(), "image/jpeg")
    driving = ("talk.mp4", media["driving"].read_bytes(), "video/mp4")
    files = {"source": portrait, "driving": driving}
    fields: dict = {}
    if case == "no driving":
        files = {"source": portrait}
    elif case == "unknown field":
        fields = {"onnx": "/etc"}
    elif case == "bad choice":
        fields = {"crop": "sideways"}
    elif case == "out of range":
        fields = {"size": "8"}
    elif case == "contradiction":
        fields = {"relative": "false", "best_frame": "true"}
    elif case == "not an image":
        files = {"source": ("face.jpg", b"GIF89a not really", "image/jpeg"), "driving": driving}
    elif case == "not a video":
        files = {"source": portrait, "driving": ("talk.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4")}
    elif case == "empty file":
        files = {"source": portrait, "driving": ("talk.mp4", b"", "video/mp4")}
    elif case == "flag value":
        fields = {"paste_back": "maybe"}
    elif case == "twice":
        files = [("source", portrait), ("source", portrait), ("driving", driving)]
    reason = assert_one_line_reason(post_animate(server.url, media, fields, files), 400)
    assert {"no driving": "driving", "unknown field": "onnx", "bad choice": "crop", "out of range": "size",
            "contradiction": "--absolute", "not an image": "not an image", "not a video": "driving",
            "empty file": "empty", "flag value": "paste_back", "twice": "twice"}[case] in reason


def test_animate_refuses_what_is_not_a_form(server):
    res = httpx.post(server.url + "/v1/animate", content=b'{"source": 1}', headers={"Content-Type": "application/json"})
    assert_one_line_reason(res, 415)
    res = httpx.post(server.url + "/v1/animate", content=b"--zz\r\ngarbage",
                     headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert_one_line_reason(res, 400)


def raw_request(url: str, head: str, body: bytes = b"", read: bool = True) -> tuple[socket.socket, bytes]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.sendall(head.encode() + body)
    if not read:
        return sock, b""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return sock, data


def test_upload_over_the_size_limit(server):
    limit = int(UPLOAD_MB * (1 << 20))
    # Declared too large: refused before the body is read.
    _, reply = raw_request(server.url, f"POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {limit + 1}\r\n"
                                       "Content-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply
    # Chunked (no length): refused once the bytes read pass the limit.
    part = (b"--b\r\nContent-Disposition: form-data; name=\"source\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n")
    body = part + b"\xff" * (limit + 4096)
    chunks = b"".join(f"{len(body[i:i + 65536]):x}\r\n".encode() + body[i:i + 65536] + b"\r\n"
                      for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    _, reply = raw_request(server.url, "POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                                       "Content-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n\r\n",
                           chunks)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_media_over_the_dimension_and_length_limits(server, media, tmp_path):
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.full((40, 5000, 3), 128, np.uint8))  # 5000 px > the 4096 px limit, a small file
    files = {"source": ("wide.png", wide.read_bytes(), "image/png"),
             "driving": ("talk.mp4", media["driving"].read_bytes(), "video/mp4")}
    assert "5000x40" in assert_one_line_reason(post_animate(server.url, media, {}, files), 413)
    bomb = tmp_path / "bomb.png"  # 6000x6000 black: 36 M pixels in a 115 kB file
    cv2.imwrite(str(bomb), np.zeros((6000, 6000, 3), np.uint8))
    files["source"] = ("bomb.png", bomb.read_bytes(), "image/png")
    assert "too large" in assert_one_line_reason(post_animate(server.url, media, {}, files), 413)
    for name, lavfi in (("big.mp4", "testsrc=size=2000x64:rate=5:duration=1"),    # wider than 1920
                        ("long.mp4", "testsrc=size=64x64:rate=5:duration=8")):     # longer than --max-video-seconds 5
        clip = tmp_path / name
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", lavfi, "-pix_fmt", "yuv420p",
                        str(clip)], check=True)
        files = {"source": ("face.jpg", media["portrait"].read_bytes(), "image/jpeg"),
                 "driving": ("talk.mp4", clip.read_bytes(), "video/mp4")}
        reason = assert_one_line_reason(post_animate(server.url, media, {}, files), 413)
        assert ("2000x64" if name == "big.mp4" else "8.0 s") in reason


def test_concurrent_requests_beyond_the_limit_get_429(server, media):
    # One request holds the only job slot while its upload is still arriving ...
    head = (f"POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    held, _ = raw_request(server.url, head, b"--b\r\n", read=False)
    try:
        wait_for(lambda: metric(server.url, "fomm_serve_animate_active") == 1, "the first request to take the slot")
        # ... so the next one is refused at once, with a reason and a Retry-After.
        res = post_animate(server.url, media, {"crop": "centre"})
        reason = assert_one_line_reason(res, 429)
        assert "busy" in reason and res.headers["retry-after"].isdigit()
    finally:
        held.close()
    # The slot is given back when the first client goes away: the next request is served.
    wait_for(lambda: metric(server.url, "fomm_serve_animate_active") == 0, "the slot to be released")
    assert post_animate(server.url, media, {"crop": "centre", "end": "0.2"}).status_code == 200


# ---- the token ----------------------------------------------------------------------------------------


def test_token_is_required_everywhere_but_healthz(token_server, media):
    url = token_server.url
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/").status_code == 200  # the page holds nothing; it asks for the token
    for headers in (None, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        res = httpx.get(url + "/metrics", headers=headers)
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
        assert_one_line_reason(post_animate(url, media, {"crop": "centre"}, headers=headers), 401)
    for token in (None, "wrong-token-0123456789"):
        for token_as in ("header", "subprotocol"):
            with pytest.raises(InvalidStatus) as refused:
                LiveClient(url, token, token_as=token_as)
            assert refused.value.response.status_code == 403
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url + "/metrics", headers=good).status_code == 200
    res = post_animate(url, media, {"crop": "centre", "end": "0.2"}, headers=good)
    assert res.status_code == 200 and res.content[4:8] == b"ftyp"
    frame = bgr_frames(media["driving"])[0]
    for token_as in ("header", "subprotocol"):  # a browser can only send it as a subprotocol
        with LiveClient(url, TOKEN, token_as=token_as) as client:
            assert client.ws.subprotocol == "fomm.v1"  # the token is never echoed
            reply = client.animate(frame)
            assert reply.image.shape == (64, 64, 3)


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--token"),
    (["--host", "127.0.0.1", "--token", "short"], "at least 16 characters"),
    (["--host", "127.0.0.1", "--token", "has spaces in it, 16+"], "at least 16 characters"),
    (["--replicas", "2"], "are for --ray"),
    (["--ray", "--replicas", "3-2"], "MIN <= MAX"),
    (["--ray"], "needs a --port"),
    (["--allow-origin", "evil.example"], "--allow-origin takes an origin"),
    (["--allow-origin", "https://app.example/path"], "--allow-origin takes an origin"),
])
def test_cli_refuses_unsafe_or_bad_settings(args, message, tmp_path):
    res = subprocess.run([sys.executable, "-m", "fomm_deploy.runtime.serve.cli", "--onnx", str(tmp_path), *args,
                          "--port", "0"], capture_output=True, text=True, timeout=120, env=_env_without_token())
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, compiled", [((), False), (("--compile",), True), (("--no-compile",), False)])
def test_serve_opens_the_torch_backend_without_torch_compile_unless_asked(args, compiled, tmp_path, monkeypatch):
    """fomm-serve's engines get compile=False (the torch backend's default on CUDA is on) unless --compile; no
    CUDA needed: the engines are a stand-in that records its options."""
    from click.testing import CliRunner

    from fomm_deploy.runtime.core.errors import InputError
    from fomm_deploy.runtime.serve import cli, engines

    seen = {}

    def engines_stand_in(onnx_dir, backend, precision, **options):
        seen.update(options)
        raise InputError("the stand-in opens no engines")

    monkeypatch.setattr(engines, "Engines", engines_stand_in)
    monkeypatch.setattr(cli, "refuse_image_bombs", lambda: None)  # keeps this process's environment as it is
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    result = CliRunner().invoke(cli.main, ["--onnx", str(tmp_path), "--backend", "torch", "--device", "cuda",
                                           "--port", "0", *args])
    assert "the stand-in opens no engines" in result.output, result.output
    assert seen["compile"] is compiled and seen["device"] == "cuda"


def test_engines_pass_compile_off_to_the_animator_unless_asked(monkeypatch):
    from fomm_deploy.runtime.core.errors import InputError
    from fomm_deploy.runtime.serve import engines

    seen = []

    def open_animator_stand_in(exported, backend, precision, **options):
        seen.append(options.get("compile"))
        raise InputError("the stand-in opens no backends")

    monkeypatch.setattr(engines, "load_exported", lambda onnx_dir: None)
    monkeypatch.setattr(engines, "open_animator", open_animator_stand_in)
    for options in ({}, {"compile": True}):
        with pytest.raises(InputError, match="stand-in"):
            engines.Engines("exported", "torch", device="cuda", **options)
    assert seen == [False, True]


def test_help_token_example_runs_as_written(bundled_export, media, tmp_path):
    """fomm-serve --help's token example, pasted into bash: the token it makes is the server's and curl's (the
    port made a free one, exported/vox this test's export; the server listens on 0.0.0.0 for a few seconds,
    behind the token)."""
    import contextlib
    import os
    import signal
    import textwrap

    from fomm_deploy.runtime.serve.cli import TOKEN_RE

    text = subprocess.run([sys.executable, "-m", "fomm_deploy.runtime.serve.cli", "--help"], capture_output=True,
                          text=True, timeout=120).stdout
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip().startswith("export FOMM_SERVE_TOKEN=")), None)
    assert first is not None, f"no 'export FOMM_SERVE_TOKEN=...' example in fomm-serve --help:\n{text}"
    last = next(i for i in range(first, len(lines)) if not lines[i].strip())
    script = textwrap.dedent("\n".join(lines[first:last]))
    assert "fomm-serve " in script and "curl " in script and ":8000" in script, script
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "work"
    (work / "exported").mkdir(parents=True)
    (work / "exported" / "vox").symlink_to(bundled_export)
    (work / "face.jpg").write_bytes(media["portrait"].read_bytes())
    (work / "talk.mp4").write_bytes(media["driving"].read_bytes())
    env = {**_env_without_token(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(["bash", "-e", "-c", script.replace("8000", str(port))], cwd=work, env=env,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the server the example left running in the background
                os.killpg(proc.pid, signal.SIGTERM)
    log = (tmp_path / "out.txt").read_text() + (tmp_path / "err.txt").read_text()
    assert rc == 0, log
    assert count_frames(work / "result.mp4") == 30, log
    printed = (tmp_path / "out.txt").read_text().split("token: ", 1)[1].split()[0]
    assert TOKEN_RE.fullmatch(printed) and "token required" in log, log


def test_serve_load_help_example_runs(bundled_export, tmp_path):
    """The load benchmark's --help example runs as written (shortened: 1 and 2 sessions for 1 s each), in a
    folder where exported/demo is an export, and writes OUT.json and OUT.md."""
    import re
    import shlex

    text = subprocess.run([sys.executable, "-m", "fomm_deploy.benchmarks.serve_load", "--help"], capture_output=True,
                          text=True, timeout=120).stdout
    example = next((line.strip() for line in text.splitlines()
                    if line.strip().startswith("python -m fomm_deploy.benchmarks.serve_load ")), None)
    assert example is not None and "--out " in example, text
    args = shlex.split(re.sub(r"--seconds \S+", "--seconds 1", re.sub(r"--sessions \S+", "--sessions 1,2", example)))
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "demo").symlink_to(bundled_export)
    res = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=_env_without_token())
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / args[args.index("--out") + 1]
    rows = json.loads(out.with_name(out.name + ".json").read_text())["rows"]
    assert [r["sessions"] for r in rows] == [1, 2] and all(r["frames"] > 0 for r in rows)
    assert "| sessions |" in out.with_name(out.name + ".md").read_text()


def _env_without_token() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "FOMM_SERVE_TOKEN"}


# ---- live sessions over WebSockets -----------------------------------------------------------------


def calibrate(client: LiveClient, frame: np.ndarray) -> list:
    """Send ``frame`` until the session takes it as its reference pose (a steady frame, as fomm-live's rule)."""
    from fomm_deploy.runtime.webcam.framer import CALIBRATE_FRAMES

    replies = [client.animate(frame) for _ in range(CALIBRATE_FRAMES)]
    assert [r.header["calibrated"] for r in replies] == [False] * (CALIBRATE_FRAMES - 1) + [True]
    return replies


def run_session(url: str, frames: list[np.ndarray], setup=None) -> list:
    """Replies to ``frames`` (centre crop), after calibrating on the first one."""
    with LiveClient(url) as client:
        assert client.control({"type": "options", "crop": "centre"})["ok"]
        if setup is not None:
            setup(client)
        calibrate(client, frames[0])
        return [client.animate(f) for f in frames]


def test_live_session_follows_the_driving_motion(server, media):
    frames = bgr_frames(media["driving"])
    with LiveClient(server.url) as client:
        client.control({"type": "options", "crop": "centre"})
        waiting = calibrate(client, frames[0])
        replies = [client.animate(f) for f in [frames[0]] + frames[1:20:2]]
    assert all(r.header["calibrated"] for r in replies)
    assert [r.header["frame"] for r in waiting + replies] == list(range(1, len(waiting + replies) + 1))
    out = [r.image.astype(float) for r in replies]
    # Until calibrated the portrait stands still; the reference frame itself gives (nearly) that picture.
    assert np.abs(waiting[0].image.astype(float) - waiting[1].image).mean() < 0.5
    still = np.abs(out[0] - waiting[-1].image).mean()  # the reference frame again: the same picture (JPEG noise)
    moved = [np.abs(o - out[0]).mean() for o in out[1:]]
    assert still < 1.5 and min(moved) > 3 * still and max(moved) > 4.0, (still, moved)
    # It is the portrait that moves, not the camera image sent back.
    camera = cv2.resize(frames[5], (64, 64), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(out[3] - camera).mean() > 10
    assert metric(server.url, "fomm_serve_frames_total") >= len(replies)


def two_sessions(url: str, frames: list[np.ndarray], portrait: bytes) -> dict:
    """Two concurrent sessions over the same frames: "a" with the default portrait, "b" with ``portrait``."""
    results: dict = {}

    def setup(client):
        assert client.set_source(portrait)["ok"]

    threads = [threading.Thread(target=lambda: results.__setitem__("a", run_session(url, frames))),
               threading.Thread(target=lambda: results.__setitem__("b", run_session(url, frames, setup)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_two_concurrent_sessions_are_isolated(server, media):
    frames = bgr_frames(media["driving"])[:16]
    alone = [r.image.astype(float) for r in run_session(server.url, frames)]
    # B's portrait: the astronaut in other colours (channels swapped). Framed around its face, the astronaut alone
    # is the bundled portrait's face again (the same person), too alike for telling the sessions apart.
    other_colours = cv2.imencode(".png", cv2.imread(str(media["portrait"]))[..., ::-1])[1].tobytes()
    results = two_sessions(server.url, frames, other_colours)
    together = [r.image.astype(float) for r in results["a"]]
    other = [r.image.astype(float) for r in results["b"]]
    assert len(together) == len(other) == 16
    assert results["a"][0].header["session"] != results["b"][0].header["session"]
    # Session A is unaffected by B's portrait and its frames: equal to A alone (JPEG noise only) ...
    assert max(np.abs(x - y).mean() for x, y in zip(together, alone)) < 1.5
    # ... and B animates its own portrait.
    assert min(np.abs(x - y).mean() for x, y in zip(together, other)) > 10


def test_live_session_options_and_recalibration(server, media):
    frames = bgr_frames(media["driving"])
    with LiveClient(server.url) as client:
        client.control({"type": "options", "crop": "centre"})
        first = calibrate(client, frames[0])[-1].image.astype(float)
        moved = client.animate(frames[12]).image.astype(float)
        assert client.control({"type": "recalibrate"})["ok"]
        # After recalibrating, frame 12 becomes the new reference pose: the portrait is back at rest.
        rest = calibrate(client, frames[12])[-1].image.astype(float)
        assert np.abs(rest - first).mean() < 1.5 < np.abs(moved - first).mean()
        assert client.control({"type": "options", "relative": False})["ok"]
        absolute = client.animate(frames[12]).image.astype(float)
        assert np.abs(absolute - rest).mean() > 1.5


def _bomb_jpeg() -> bytes:
    return cv2.imencode(".jpg", np.zeros((6000, 6000, 3), np.uint8))[1].tobytes()  # 36 M pixels in 0.5 MB


@pytest.mark.parametrize("message", [b"not a jpeg", _bomb_jpeg(), "not json", '{"type": "dance"}', '{"type": "source", "image": "@@"}',
                                     '{"type": "options", "crop": "sideways"}', '[1, 2]'],
                         ids=["not a jpeg", "36 M pixel jpeg", "not json", "unknown type", "bad base64", "bad crop",
                              "not an object"])
def test_live_bad_messages_get_a_reason_and_the_session_goes_on(server, media, message):
    frame = bgr_frames(media["driving"])[0]
    with LiveClient(server.url) as client:
        client.ws.send(message)
        reply = client.receive()
        assert reply["type"] == "error" and reply["reason"] and "\n" not in reply["reason"]
        assert client.animate(frame).image.shape == (64, 64, 3)


def test_a_portrait_that_is_not_an_image_is_named_as_the_portrait(server, media):
    """The reason names what the client sent, never a path on the server."""
    with LiveClient(server.url) as client:
        reply = client.set_source(b"GIF89a but not really")
        assert reply["type"] == "error" and reply["reason"].startswith("the portrait is not an image")
        assert "/" not in reply["reason"].split("(")[0]
        assert client.animate(bgr_frames(media["driving"])[0]).image.shape == (64, 64, 3)


def test_newest_frame_wins_on_the_server(server, media):
    frames = bgr_frames(media["driving"])[:12]
    with LiveClient(server.url) as client:
        client.control({"type": "options", "crop": "centre"})
        for f in frames:  # a client that does not wait: everything at once
            client.send(f)
        replies = []
        while True:  # a broken drop count fails here (TimeoutError) instead of hanging the suite
            replies.append(client.receive(timeout=120))
            if replies[-1].header["frame"] + replies[-1].header["dropped"] == len(frames):
                break
    assert all(not isinstance(r, dict) for r in replies)
    assert len(replies) + replies[-1].header["dropped"] == len(frames) and replies[-1].header["dropped"] > 0


def test_session_limit(bundled_export, media):
    with ServerProcess(["--onnx", str(bundled_export), "--max-sessions", "1"]) as s, LiveClient(s.url) as first:
        first.animate(bgr_frames(media["driving"])[0])
        second = LiveClient(s.url)
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as closed:
            second.ws.recv(timeout=60)  # (a deadline against hanging: without the limit nothing comes)
        assert closed.value.rcvd.code == 1013 and "limit" in closed.value.rcvd.reason


# ---- batching across sessions (in process) ------------------------------------------------------------


def test_one_batch_of_sessions_equals_each_session_alone(bundled_export):
    from fomm_deploy.runtime.animator import animate_together
    from fomm_deploy.runtime.media.preprocess import load_image, prepare_frame
    from fomm_deploy.runtime.media.samples import head_motion, sample_face
    from fomm_deploy.runtime.serve.engines import Engines

    engines = Engines(bundled_export, max_batch=8)
    assert engines.max_batch == 8  # the exported graphs take a dynamic batch
    frames = head_motion(prepare_frame(sample_face(), engines.frame_size), 5, seed=1)
    sessions = [engines.animator(), engines.animator(relative=False), engines.animator(adapt_scale=False)]
    for animator, source in zip(sessions, (sample_face(), load_image(DATA / "astronaut.png"), frames[4])):
        animator.set_source(source)
        animator.set_reference(frames[0], prepared=True)
    together = animate_together(sessions, frames[1:4])
    alone = np.stack([a.animate_prepared(f[None])[0] for a, f in zip(sessions, frames[1:4])])
    assert np.abs(together.astype(int) - alone).max() <= 1
    assert min(np.abs(together[i].astype(int) - together[j]).mean() for i, j in ((0, 1), (0, 2), (1, 2))) > 5


def test_frame_step_batches_are_padded_to_their_bucket(bundled_export):
    """With buckets (what fomm-serve gives a backend that captures per batch size), 3 sessions run as one
    frame_step call of 4 rows, the last repeated, and each session gets its own frame: as alone."""
    from fomm_deploy.runtime.animator import animate_together, bucket_size
    from fomm_deploy.runtime.media.preprocess import load_image, prepare_frame
    from fomm_deploy.runtime.media.samples import head_motion, sample_face
    from fomm_deploy.runtime.serve.engines import Engines

    engines = Engines(bundled_export, max_batch=8)
    assert engines.graphs == "frame_step" and engines.buckets is None  # ONNX Runtime takes any batch as it is
    assert [bucket_size(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 9]
    seen = []
    real_infer = engines.frame_step.infer

    def spy(feed):  # records the batch the graph is given; ONNX Runtime computes it
        seen.append(len(feed["driving"]))
        return real_infer(feed)

    engines.frame_step.infer = spy
    frames = head_motion(prepare_frame(sample_face(), engines.frame_size), 5, seed=1)
    sessions = [engines.animator(), engines.animator(relative=False), engines.animator(adapt_scale=False)]
    for animator, source in zip(sessions, (sample_face(), load_image(DATA / "astronaut.png"), frames[4])):
        animator.set_source(source)
        animator.set_reference(frames[0], prepared=True)
    together = animate_together(sessions, frames[1:4], buckets=(1, 2, 4, 8))
    assert seen == [4] and together.shape[0] == 3
    alone = np.stack([a.animate_prepared(f[None])[0] for a, f in zip(sessions, frames[1:4])])
    assert seen == [4, 1, 1, 1]
    assert np.abs(together.astype(int) - alone).max() <= 1


def test_frames_that_wait_together_go_in_one_generator_call(bundled_export):
    """While the engine is busy, the newest frames of three sessions wait; they then run as one batch."""
    from fomm_deploy.runtime.media.preprocess import prepare_frame
    from fomm_deploy.runtime.media.samples import head_motion, sample_face
    from fomm_deploy.runtime.serve.engines import Engines
    from fomm_deploy.runtime.serve.sessions import SessionHub, SocketSession
    from fomm_deploy.runtime.serve.metrics import server_metrics

    engines = Engines(bundled_export, max_batch=8)
    frames = head_motion(prepare_frame(sample_face(), engines.frame_size), 6, seed=2)
    hub = SessionHub(engines, server_metrics())
    try:
        sessions = [SocketSession(engines, sample_face()) for _ in range(4)]
        with engines.lock:  # the engine is busy: the worker takes the first frame and waits for the lock
            first = hub.submit(sessions[0], frames[0], True)
            wait_for(lambda: not hub._pending, "the worker to take the first frame")
            later = [hub.submit(s, f, True) for s, f in zip(sessions[1:], frames[1:4])]
            dropped = hub.submit(sessions[1], frames[4], True)  # newer than session 1's waiting frame
        assert first.result(timeout=120).batch == 1
        assert later[0].result(timeout=120) is None and sessions[1].dropped == 1  # replaced: newest wins
        results = [dropped.result(timeout=120)] + [f.result(timeout=120) for f in later[1:]]
        assert [r.batch for r in results] == [3, 3, 3]
    finally:
        hub.close()


def test_form_errors_name_the_field_and_keep_the_value(server, media):
    """click's refusal in the form's terms: the field's own name, and the caller's value unchanged."""
    reason = assert_one_line_reason(post_animate(server.url, media, {"reference_frame": "x_1"}), 400)
    assert "'reference_frame'" in reason and "'x_1'" in reason and "--" not in reason
    reason = assert_one_line_reason(post_animate(server.url, media, {"start": "99"}), 413)
    assert "start 99" in reason and "end" not in reason  # the caller sent no end


def test_live_portrait_side_limit_is_checked_on_the_real_size(server, tmp_path):
    """A portrait JPEG wider than 4096 px but under the pixel limit is refused over a live session too (the
    reader must not shrink it before the check)."""
    ok, data = cv2.imencode(".jpg", np.full((2100, 5000, 3), 120, np.uint8))  # 10.5 M px; halved it is 2500 wide
    assert ok
    with LiveClient(server.url) as client:
        reply = client.set_source(data.tobytes())
    assert reply.get("type") == "error" and "5000x2100" in reply["reason"], reply


def _reason(client: LiveClient) -> str:
    """The next message, which must be an error with a one-line reason."""
    reply = client.receive(timeout=120)
    assert isinstance(reply, dict), f"no error: the frame was animated ({reply.header})"
    assert reply["type"] == "error", reply
    assert reply["reason"] and "\n" not in reply["reason"], reply
    return reply["reason"]


def test_live_frame_over_the_byte_limit_gets_a_reason_and_the_session_goes_on(server, media):
    """fomm-serve's default limit of bytes per live frame: a valid JPEG of exactly that many bytes is animated,
    one byte more is refused with the limit in the reason, and the session goes on. (Zero bytes after the JPEG's
    end-of-image marker make it larger without changing the picture: decoders stop at the marker.)"""
    from fomm_deploy.runtime.serve.app import Limits

    limit = Limits().max_frame_bytes
    frame = bgr_frames(media["driving"])[0]
    ok, jpeg = cv2.imencode(".jpg", frame)
    assert ok and len(jpeg) < limit
    at_limit = jpeg.tobytes() + b"\0" * (limit - len(jpeg))
    with LiveClient(server.url) as client:
        client.control({"type": "options", "crop": "centre"})
        client.send(at_limit)
        accepted = client.receive(timeout=120)
        assert not isinstance(accepted, dict), accepted
        assert accepted.image.shape == (64, 64, 3) and accepted.header["frame"] == 1
        client.send(at_limit + b"\0")
        assert _reason(client) == f"frame larger than {limit} bytes"
        after = client.animate(frame)  # the session goes on; the refused frame was never counted
        assert not isinstance(after, dict), after
        assert after.image.shape == (64, 64, 3) and after.header["frame"] == 2 and after.header["dropped"] == 0


def test_live_frame_over_the_side_limit_gets_a_reason_and_the_session_goes_on(server, media):
    """fomm-serve's default limit of pixels on a live frame's side: a frame that long is animated, one pixel
    longer (a small file, far under the byte and pixel-count limits) is refused with its size and the limit in
    the reason, and the session goes on."""
    from fomm_deploy.runtime.serve.app import Limits

    side = Limits().max_frame_side
    frame = bgr_frames(media["driving"])[0]
    with LiveClient(server.url) as client:
        client.control({"type": "options", "crop": "centre"})
        for width in (side, side + 1):  # the driving frame, stretched to a wide strip
            wide = cv2.resize(frame, (width, 64), interpolation=cv2.INTER_AREA)
            client.send(wide)
            if width == side:
                accepted = client.receive(timeout=120)
                assert not isinstance(accepted, dict), accepted
                assert accepted.image.shape == (64, 64, 3)
        assert _reason(client) == f"the frame is {side + 1}x64; frames may be at most {side} px on a side"
        after = client.animate(frame)
        assert not isinstance(after, dict), after
        assert after.image.shape == (64, 64, 3) and after.header["frame"] == 2


# ---- the portrait framed as in every command (issue #26) ----------------------------------------------------


def test_astronaut_is_framed_around_its_face_over_http_and_the_socket(server, media, tmp_path):
    """An uploaded portrait, over POST /v1/animate and in a live session's 'source' message, gets the box around
    its face that fomm-animate and fomm-live give (tests/runtime/test_animate_cli.py, test_live.py), not the
    whole 512 px photo squeezed into the model's 64 px frame."""
    from tests.runtime.media.test_framing import ASTRONAUT_CROP, portrait_distances

    photo = (DATA / "astronaut.png").read_bytes()
    files = {"source": ("astronaut.png", photo, "image/png"),
             "driving": ("talk.mp4", media["driving"].read_bytes(), "video/mp4")}
    res = post_animate(server.url, media, {"side_by_side": "true", "end": "0.2"}, files)
    assert res.status_code == 200, res.text
    assert res.headers["fomm-source-crop"] == "source crop source.png: x=134 y=15 side=179 (face)"
    out = tmp_path / "sbs.mp4"
    out.write_bytes(res.content)
    first = next(iter(iter_frames(out)))
    assert first.shape == (64, 192, 3)
    to_framed, to_squeezed = portrait_distances(first[:, :64])  # the source panel
    assert to_framed < 8 and to_squeezed > 20, (to_framed, to_squeezed)

    wall = np.full((240, 320, 3), 90, np.uint8)  # no face: the session stays uncalibrated and sends the portrait
    with LiveClient(server.url) as client:
        reply = client.set_source(photo)
        assert reply == {"type": "source", "ok": True, "crop": "face", "box": list(ASTRONAUT_CROP),
                         "message": "source crop the portrait: x=134 y=15 side=179 (face)"}
        still = client.animate(wall)
        assert not still.header["calibrated"]
        to_framed, to_squeezed = portrait_distances(still.image[..., ::-1])
        assert to_framed < 8 and to_squeezed > 20, (to_framed, to_squeezed)
        # the other choices are fomm-animate's --crop's
        assert client.set_source(photo, crop="centre")["box"] == [0, 0, 512]
        bad = client.set_source(photo, crop="sideways")
        assert bad["type"] == "error" and "crop must be one of auto, follow, centre, none" in bad["reason"]
