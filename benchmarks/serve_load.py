"""Load benchmark of fomm-serve's live sessions: N concurrent WebSocket sessions on loopback.

Each session is a newest-frame-wins client (one frame in flight: it sends the next frame when the previous
reply arrived), animating the frames of a clip of the sample face under head motion for a fixed time. Per N:
frames/s per session, total throughput, round-trip latency p50 / p99 and the batch sizes the server used.
The server runs in a subprocess on 127.0.0.1 only (``ServerProcess``).

    python -m fomm_deploy.benchmarks.serve_load --onnx exported/demo --sessions 1,2,4,8 --seconds 10 \\
        --out benchmarks/results/serve-demo-cpu

With ``--limits`` it measures instead what the server's default limits cost: the largest requests they let
through (a live portrait of 4096x4096 px; a POST /v1/animate with such a portrait and a 1920x1080 driving clip
at 60 frames/s, as long as both the seconds and the frames caps allow), how long each takes and the server's
peak memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import cv2
import httpx
import numpy as np

from fomm_deploy.benchmarks.bench import machine_info
from fomm_deploy.runtime.core.errors import FommError
from fomm_deploy.runtime.core.fileio import atomic_path
from fomm_deploy.runtime.core.options import FiniteFloat, onnx_dir_option
from fomm_deploy.runtime.graphs import load_exported
from fomm_deploy.runtime.media.samples import head_motion, sample_face, write_sample_driving_video
from fomm_deploy.runtime.media.video import ffmpeg_exe, open_video
from fomm_deploy.runtime.serve import MAX_IMAGE_SIDE
from fomm_deploy.runtime.serve.app import Limits
from fomm_deploy.runtime.serve.client import LiveClient, ServerProcess


def run_sessions(url: str, n: int, seconds: float, frames: list[np.ndarray]) -> dict:
    """``n`` sessions for ``seconds`` each (started together, after calibrating); their numbers."""
    results: list[dict] = [{} for _ in range(n)]
    ready = threading.Barrier(n)

    def session(i: int) -> None:
        with LiveClient(url) as client:
            client.control({"type": "options", "crop": "centre"})
            while not client.animate(frames[0]).header["calibrated"]:
                pass
            ready.wait()
            latencies, batches = [], []
            k, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                reply = client.animate(frames[k % len(frames)])
                latencies.append((time.perf_counter() - t0) * 1000)
                batches.append(reply.header["batch"])
                k += 1
            results[i] = {"frames": k, "seconds": time.perf_counter() - start, "latencies_ms": latencies,
                          "batches": batches}

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = np.concatenate([r["latencies_ms"] for r in results])
    batches = np.concatenate([r["batches"] for r in results])
    per_session = [r["frames"] / r["seconds"] for r in results]
    return {"sessions": n, "seconds": seconds,
            "fps_per_session_mean": float(np.mean(per_session)), "fps_per_session_min": float(np.min(per_session)),
            "total_fps": float(sum(per_session)),
            "latency_p50_ms": float(np.percentile(latencies, 50)), "latency_p99_ms": float(np.percentile(latencies, 99)),
            "mean_batch": float(batches.mean()), "frames": int(sum(r["frames"] for r in results))}


def _reset_peak(pid: int) -> None:
    """Start the process's peak memory (VmHWM) afresh from its current size (Linux 4.0+; kept where refused)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _memory_mb(pid: int) -> dict:
    """The server's resident memory now and its peak so far (VmRSS, VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024) for k in ("VmRSS", "VmHWM")}


def largest_inputs(folder: Path, limits: Limits) -> tuple[Path, Path]:
    """A portrait of ``MAX_IMAGE_SIDE`` px square (JPEG), and a driving clip of 1920x1080 px at 60 frames/s with
    audio, half a second under both the seconds and the frames cap (the sample face under head motion, looped)."""
    portrait = folder / "portrait.jpg"
    face = cv2.resize(sample_face(), (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(portrait), cv2.cvtColor(np.rint(face * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    fps = 60
    seconds = min(limits.max_video_seconds, limits.max_video_frames / fps) - 0.5
    loop = write_sample_driving_video(folder / "loop.mp4", frames=10 * fps, fps=fps, size=128, seed=5)
    side = limits.max_video_side
    height = side * 9 // 16
    driving = folder / "driving.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(loop), "-t",
                    f"{seconds:g}", "-vf", f"scale={height}:{height},pad={side}:{height}:{(side - height) // 2}:0",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(driving)], check=True)
    return portrait, driving


def measure_limits(onnx_dir: Path, backend: str, precision: str) -> dict:
    """The largest live portrait and the largest /v1/animate request the default limits let through, against a
    server with those defaults: seconds taken, and the server's memory."""
    limits = Limits()
    with tempfile.TemporaryDirectory() as tmp:
        portrait, driving = largest_inputs(Path(tmp), limits)
        _, info = open_video(driving)
        upload = portrait.stat().st_size + driving.stat().st_size
        if upload > limits.max_upload_bytes:
            raise click.ClickException(f"the inputs are {upload} bytes, over the upload limit")
        row = {"portrait_px": MAX_IMAGE_SIDE, "portrait_bytes": portrait.stat().st_size,
               "driving": f"{info.width}x{info.height}, {info.frame_count} frames, {info.duration:.1f} s",
               "driving_bytes": driving.stat().st_size, "upload_limit_bytes": limits.max_upload_bytes}
        with ServerProcess(["--onnx", str(onnx_dir), "--backend", backend, "--precision", precision]) as server:
            row["memory_idle_mb"] = _memory_mb(server.proc.pid)
            _reset_peak(server.proc.pid)
            with LiveClient(server.url) as client:
                t0 = time.perf_counter()
                assert client.set_source(portrait.read_bytes())["ok"]
                row["live_portrait_s"] = time.perf_counter() - t0
            row["memory_after_live_portrait_mb"] = _memory_mb(server.proc.pid)
            files = {"source": ("portrait.jpg", portrait.read_bytes(), "image/jpeg"),
                     "driving": ("driving.mp4", driving.read_bytes(), "video/mp4")}
            _reset_peak(server.proc.pid)
            t0 = time.perf_counter()
            res = httpx.post(server.url + "/v1/animate", files=files, timeout=3600)
            row["animate_s"] = time.perf_counter() - t0
            row["animate_status"] = res.status_code
            row["animate_result_bytes"] = len(res.content)
            row["memory_after_animate_mb"] = _memory_mb(server.proc.pid)
        if res.status_code != 200:
            raise click.ClickException(f"the largest request was refused: {res.status_code} {res.text[:300]}")
    return row


def limits_markdown(row: dict, meta: dict) -> str:
    return "\n".join([
        f"# fomm-serve's default limits: the largest requests ({meta['model']}, {meta['backend']} {meta['precision']})",
        "", f"Machine: {meta['machine'].get('cpu', '?')}, {meta['machine'].get('cores', '?')} cores. "
        f"Command: `{meta['command']}`", "",
        "| request | size | seconds | server memory after it / peak during it |", "| --- | --- | ---: | ---: |",
        f"| live `source` message | {row['portrait_px']}x{row['portrait_px']} JPEG, {row['portrait_bytes']} bytes | "
        f"{row['live_portrait_s']:.2f} | {row['memory_after_live_portrait_mb']['VmRSS']} / "
        f"{row['memory_after_live_portrait_mb']['VmHWM']} MB |",
        f"| POST /v1/animate (default options) | that portrait + {row['driving']}, {row['driving_bytes']} bytes | "
        f"{row['animate_s']:.1f} | {row['memory_after_animate_mb']['VmRSS']} / "
        f"{row['memory_after_animate_mb']['VmHWM']} MB |", "",
        f"Idle server: {row['memory_idle_mb']['VmRSS']} MB. 1-minute load average before / after: "
        f"{meta['load_average_1min']['before']} / {meta['load_average_1min']['after']}.", ""])


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# fomm-serve load: {meta['model']} ({meta['backend']} {meta['precision']})", "",
             f"Machine: {meta['machine'].get('cpu', '?')}, {meta['machine'].get('cores', '?')} cores, GPU: "
             f"{meta['machine'].get('gpu', 'none')}. Loopback (127.0.0.1), {meta['seconds']:g} s per row, "
             "one frame in flight per session (newest frame wins), camera frames 320x240 JPEG, server "
             f"--max-batch {meta['max_batch']}. 1-minute load average of the machine before / after: "
             f"{meta['load_average_1min']['before']} / {meta['load_average_1min']['after']}.", "",
             f"Command: `{meta['command']}`", "",
             "| sessions | frames/s per session (mean / min) | total frames/s | round trip p50 | p99 | mean batch |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['sessions']} | {r['fps_per_session_mean']:.1f} / {r['fps_per_session_min']:.1f} | "
                     f"{r['total_fps']:.1f} | {r['latency_p50_ms']:.0f} ms | {r['latency_p99_ms']:.0f} ms | "
                     f"{r['mean_batch']:.2f} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@onnx_dir_option(None, required=True)
@click.option("--sessions", default="1,2,4,8", show_default=True, help="Numbers of concurrent sessions, one row each.")
@click.option("--seconds", default=10.0, show_default=True, type=FiniteFloat(0.5, 600),
              help="How long each row runs.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 64),
              help="The server's --max-batch.")
@click.option("--backend", default="onnxruntime", show_default=True, help="The server's --backend.")
@click.option("--precision", default="fp32", show_default=True, help="The server's --precision.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results as OUT.json and OUT.md.")
@click.option("--limits", "limits_run", is_flag=True,
              help="Measure the largest requests the server's default limits let through instead (a few minutes).")
def main(onnx_dir: Path, sessions: str, seconds: float, max_batch: int, backend: str, precision: str,
         out: Path, limits_run: bool) -> None:
    """Measure fomm-serve's live throughput and latency against the number of concurrent sessions.

    \b
    Example (after make demo; writes serve-load.json and serve-load.md, about a minute):
      python -m fomm_deploy.benchmarks.serve_load --onnx exported/demo --sessions 1,2,4 --seconds 10 --out serve-load
    """
    try:
        load_exported(onnx_dir)  # refused here, in its own words, rather than by the server it would start
    except FommError as exc:
        raise click.BadParameter(str(exc), param_hint="--onnx") from None
    command = "python -m fomm_deploy.benchmarks.serve_load " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if limits_run:
        load_before = os.getloadavg()
        row = measure_limits(onnx_dir, backend, precision)
        meta = {"model": onnx_dir.name, "backend": backend, "precision": precision, "machine": machine_info(),
                "command": command,
                "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}}
        for suffix, text in ((".json", json.dumps({**meta, "limits": row}, indent=2) + "\n"),
                             (".md", limits_markdown(row, meta))):
            with atomic_path(out.with_name(out.name + suffix)) as tmp:
                tmp.write_text(text)
        click.echo(limits_markdown(row, meta))
        return
    try:
        counts = [int(s) for s in sessions.split(",") if s.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{sessions!r}: give session counts of at least 1, e.g. 1,2,4,8",
                                 param_hint="--sessions")
    face = cv2.resize(sample_face(), (240, 240), interpolation=cv2.INTER_AREA)
    frames = [cv2.copyMakeBorder(cv2.cvtColor(np.rint(f * 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                                 0, 0, 40, 40, cv2.BORDER_REPLICATE) for f in head_motion(face, 50, seed=7)]
    rows = []
    load_before = os.getloadavg()
    with ServerProcess(["--onnx", str(onnx_dir), "--backend", backend, "--precision", precision,
                        "--max-batch", str(max_batch), "--max-sessions", str(max(counts))]) as server:
        for n in counts:
            row = run_sessions(server.url, n, seconds, frames)
            click.echo(f"{n} sessions: {row['fps_per_session_mean']:.1f} frames/s each, {row['total_fps']:.1f} total, "
                       f"p50 {row['latency_p50_ms']:.0f} ms, p99 {row['latency_p99_ms']:.0f} ms, "
                       f"mean batch {row['mean_batch']:.2f}")
            rows.append(row)
    meta = {"model": onnx_dir.name, "backend": backend, "precision": precision, "seconds": seconds,
            "max_batch": max_batch, "machine": machine_info(),
            "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
            "command": command}
    for suffix, text in ((".json", json.dumps({**meta, "rows": rows}, indent=2) + "\n"), (".md", markdown(rows, meta))):
        with atomic_path(out.with_name(out.name + suffix)) as tmp:
            tmp.write_text(text)
    click.echo(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main()
