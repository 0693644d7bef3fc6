"""Where one exported graph spends its time in ONNX Runtime on this CPU: kernel time per operator type and per
node, from ONNX Runtime's own profiler, and the speed its convolutions reach.

    python -m fomm_deploy.benchmarks.profile_graph --onnx exported/vox --graph generator_frame --precision int8

``fomm-bench --peak`` says how far a path is above its floor; this says what the rest is. The graph runs on
real feeds: the bundled portrait as the source and a frame of synthetic head motion as the driving frame (the
benchmark's frames), encoded by the export's own fp32 ``kp_detector`` and ``source_encoder``. ONNX Runtime
names the nodes it fuses or adds (``QLinearConv`` from a ``DequantizeLinear -> Conv -> QuantizeLinear``
group, the ``Transpose`` and ``Reorder*`` nodes of its layout passes), so the table shows what really ran.
The convolution speeds divide the work counted from the graph (``roofline.graph_work``) by the kernel time
of ONNX Runtime's convolution nodes: int8 work by ``QLinearConv``, float work by ``Conv`` / ``FusedConv``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from fomm_deploy.runtime.backends.onnxrt import session_from_onnx
from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.feeds import feed_set, kp_from_outputs
from fomm_deploy.runtime.core.options import onnx_dir_option, precision_option
from fomm_deploy.runtime.graphs import load_exported
from fomm_deploy.runtime.core.fileio import atomic_path

from .bench import bench_frames, cpu_line, machine_info
from .roofline import graph_work

PROFILED_GRAPHS = ("kp_detector", "source_encoder", "generator", "generator_frame", "frame_step")
# ONNX Runtime's convolution kernels after its graph optimisations, by the kind of work they run.
INT8_CONV_OPS = frozenset({"QLinearConv", "ConvInteger"})
FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv"})


@dataclass
class Profile:
    graph: str
    precision: str
    file: str
    runs: int
    threads: int
    wall_ms: list[float]
    kernel_ms: float  # per run, all nodes
    ops: dict[str, float]  # op type -> ms per run, largest first
    nodes: list[tuple[str, str, float]]  # (op type, node, ms per run), largest first
    int8_gop: float = 0.0
    float_gflop: float = 0.0
    conv_speed: dict[str, float] = field(default_factory=dict)  # "int8 GOP/s", "float GFLOP/s"
    machine: dict[str, str] = field(default_factory=machine_info)

    @property
    def wall_median_ms(self) -> float:
        return float(np.median(self.wall_ms))


def graph_feed(exported, graph: str) -> dict[str, np.ndarray]:
    """A batch-1 feed for ``graph``: the benchmark's portrait animated by one frame of its head motion, with
    keypoints and the encoded source from the export's fp32 graphs (``feeds.feed_set`` builds it)."""
    source, frames = bench_frames(exported.config, 1)
    src, drv = (np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) for x in (source, frames[0]))

    def run(name: str, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        session = session_from_onnx(exported.manifest.verified_graph(exported.dir, name, "fp32"))
        names = [o.name for o in session.get_outputs()]
        return [dict(zip(names, session.run(None, feed))) for feed in feeds]

    kp_src, kp_drv = (kp_from_outputs(o) for o in run("kp_detector", [{"image": src}, {"image": drv}]))
    encoded = None
    if exported.manifest.has_file(exported.dir, "source_encoder", "fp32"):
        encoded = run("source_encoder", [{"source": src}])[0]
    feeds = feed_set(src, kp_src, drv, kp_drv, encoded=encoded)
    if graph not in feeds:
        raise InputError(f"--graph {graph}: this export has no per-source split graphs (source_encoder) to feed "
                         "it; profile kp_detector or generator")
    return feeds[graph]


def kernel_times(events: list[dict], skip: int, runs: int) -> tuple[Counter, Counter]:
    """ONNX Runtime profiler events -> kernel ms per run by operator type and by (operator, node), over the
    runs after the first ``skip`` ones (each run's node events follow its ``model_run`` event)."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) != skip + runs:
        raise RuntimeError(f"ONNX Runtime's profile holds {len(starts)} runs, not {skip + runs}")
    first = starts[skip] if skip else 0
    by_op: Counter = Counter()
    by_node: Counter = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"] / 1e3 / runs
            by_node[(op, e["name"][:-len("_kernel_time")])] += e["dur"] / 1e3 / runs
    return by_op, by_node


def profile_graph(exported, graph: str, precision: str, *, runs: int = 6, warmup: int = 2,
                  threads: int | None = None, progress: bool = False) -> Profile:
    """Run ``graph`` of an export ``warmup + runs`` times under ONNX Runtime's profiler; kernel times are per
    timed run (the warm-up runs, which include first-run allocations, are left out)."""
    path = exported.manifest.verified_graph(exported.dir, graph, precision)
    feed = graph_feed(exported, graph)
    with tempfile.TemporaryDirectory(prefix="fomm-profile-") as tmp:
        session = session_from_onnx(path, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        wall = []
        for i in tqdm(range(warmup + runs), desc=f"profiling {path.name}", unit="run", disable=not progress):
            t0 = time.perf_counter()
            session.run(None, feed)
            if i >= warmup:
                wall.append(1e3 * (time.perf_counter() - t0))
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op, by_node = kernel_times(events, warmup, runs)
    work = graph_work(path)
    speed = {}
    int8_ms = sum(v for k, v in by_op.items() if k in INT8_CONV_OPS)
    float_ms = sum(v for k, v in by_op.items() if k in FLOAT_CONV_OPS)
    if work.int8_gop and int8_ms:
        speed["int8 GOP/s"] = work.int8_gop / (int8_ms / 1e3)
    if work.float_gflop and float_ms:
        speed["float GFLOP/s"] = work.float_gflop / (float_ms / 1e3)
    return Profile(graph, precision, path.name, runs, threads or os.cpu_count() or 1, wall,
                   sum(by_op.values()), dict(by_op.most_common()),
                   [(op, name, ms) for (op, name), ms in by_node.most_common()],
                   work.int8_gop, work.float_gflop, speed)


def markdown(p: Profile, command: str, top: int) -> str:
    lines = [f"Command: `{command}`", "",
             f"Machine: {cpu_line(p.machine)}; onnxruntime {p.machine.get('onnxruntime', '?')}.", "",
             f"`{p.file}` ({p.graph}, {p.precision}), {p.runs} runs after warm-up, {p.threads} threads: wall median "
             f"{p.wall_median_ms:.1f} ms, kernel time {p.kernel_ms:.1f} ms per run. Convolution work "
             f"{p.int8_gop:.2f} int8 GOP + {p.float_gflop:.2f} float GFLOP"
             + "".join(f"; {k} {v:.0f}" for k, v in p.conv_speed.items()) + ".", "",
             "| operator | ms per run | share |", "| --- | ---: | ---: |"]
    lines += [f"| {op} | {ms:.2f} | {100 * ms / p.kernel_ms:.1f} % |" for op, ms in p.ops.items()]
    lines += ["", f"The {top} slowest nodes:", "", "| node | operator | ms per run |", "| --- | --- | ---: |"]
    lines += [f"| `{name}` | {op} | {ms:.2f} |" for op, name, ms in p.nodes[:top]]
    return "\n".join(lines) + "\n"


@click.command(context_settings=CONTEXT)
@onnx_dir_option(None, required=True)
@click.option("--graph", type=click.Choice(PROFILED_GRAPHS), default="generator_frame", show_default=True,
              help="Which graph to profile.")
@precision_option(help="Which of its files: int8 profiles <graph>.int8.onnx (graphs that int8 keeps in fp32 "
                       "profile their fp32 file).")
@click.option("--runs", type=click.IntRange(1), default=6, show_default=True, help="Profiled runs, after warm-up.")
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: all cores).")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="How many nodes to list.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the whole profile (every operator and node) as JSON.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tables as markdown (they are printed either way).")
@version_option()
@user_errors
def main(onnx_dir: Path, graph: str, precision: str, runs: int, warmup: int, threads: int | None, top: int,
         json_out: Path | None, md_out: Path | None) -> None:
    """Profile one exported graph in ONNX Runtime on the CPU: kernel time per operator and per node, and the
    speed its convolutions reach (work counted from the graph over their kernel time).

    \b
    Example:
      python -m fomm_deploy.benchmarks.profile_graph --onnx exported/vox --graph generator_frame --precision int8
    """
    exported = load_exported(onnx_dir)
    p = profile_graph(exported, graph, precision, runs=runs, warmup=warmup, threads=threads, progress=True)
    command = shlex.join(["python", "-m", "fomm_deploy.benchmarks.profile_graph", *sys.argv[1:]])
    text = markdown(p, command, top)
    click.echo(text)
    if md_out:
        with atomic_path(md_out) as tmp:
            tmp.write_text(text)
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({**asdict(p), "wall_median_ms": p.wall_median_ms, "command": command},
                                      indent=1))


if __name__ == "__main__":
    main()
