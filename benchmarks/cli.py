"""``fomm-bench``: latency of one animation step per backend, against upstream's eager PyTorch."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.fileio import check_output_file
from fomm_deploy.runtime.core.names import check_backend_device, parse_backend_pairs
from fomm_deploy.runtime.core.options import backends_option, ckpt_option, config_option, device_option, onnx_dir_option

from .bench import available_backends, draw_chart, markdown_table, run_bench, write_json

VARIANTS = ("reference", "split", "frame_step")


def parse_variants(text: str) -> tuple[str, ...]:
    """``--variants``: a comma-separated choice of :data:`VARIANTS`, in the order given.

    Raises:
        InputError: an empty list or another name.
    """
    chosen = tuple(v.strip() for v in text.split(",") if v.strip())
    if not chosen or not set(chosen) <= set(VARIANTS):
        raise InputError(f"--variants takes {' and/or '.join(VARIANTS)}, got {text!r}")
    return chosen


@click.command(context_settings=CONTEXT)
@config_option(" (default: vox-256, or the config of --onnx DIR).")
@ckpt_option(" to benchmark (default: random weights; latency does not depend on the weights).")
@onnx_dir_option(None, help_suffix=" Benchmark it instead of exporting into a temporary folder.")
@backends_option("; an item without a precision runs fp32. E.g. onnxruntime:int8,onnxruntime:fp32,torch "
                 "(default: everything this machine can run).")
@click.option("--variants", default="reference,split,frame_step", show_default=True,
              help="reference: kp_detector + generator per step; split: kp_detector + generator_frame with the "
                   "motion on the host; frame_step: the one frame_step graph, uint8 frame in and out.")
@device_option()
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps first.")
@click.option("--iters", default=10, show_default=True, type=click.IntRange(3), help="Timed steps.")
@click.option("--threads", default=None, type=click.IntRange(1), help="CPU threads (default: all cores).")
@click.option("--peak", is_flag=True,
              help="Also measure this CPU's fp32 and int8 convolution peaks (about a second, before the first "
                   "path and after each) and report each path's floor, from the peaks around it, and how far "
                   "above it the path runs (x floor).")
@click.option("--peers", is_flag=True,
              help="Also time, in the same run and the same way, what a CPU user could run instead: torch.compile "
                   "of upstream's modules (fp32, and bf16 autocast on a CPU with native bf16) and OpenVINO (pip "
                   "install openvino) on the split graphs at fp32, bf16, int8 and int8+bf16. Compile times are "
                   "reported apart; each peer's prediction is compared with upstream eager's. A peer that cannot "
                   "run here is a skipped row with the reason.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON (baseline_median_ms, results[...]).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results table as markdown.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG chart (stages stacked per backend).")
@version_option()
@user_errors
def main(config: str, ckpt: Path | None, onnx_dir: Path | None, backends: str | None, variants: str,
         device: str | None, warmup: int,
         iters: int, threads: int | None, peak: bool, peers: bool, json_path: Path | None, md_path: Path | None,
         chart_path: Path | None) -> None:
    """Measure one animation step (driving keypoints + generator) for every backend, precision and graph
    variant available here, next to upstream's eager PyTorch demo loop (fp32, batch 1) in the same run.

    Reports median / p90 / p99 latency, fps, peak resident memory, per-stage times and the convolution work
    of each path's graphs; the ratio to the upstream baseline of the same run is the number that carries
    over between machines. With --peak, also this CPU's convolution peaks and each path's floor. With
    --peers, also the peers (torch.compile, OpenVINO) with their compile times and their difference from
    upstream eager's prediction.

    \b
    Example:
      fomm-bench --json bench.json --markdown bench.md --chart bench.png
      fomm-bench --peak --backends onnxruntime:int8 --variants split
      fomm-bench --peak --peers --backends onnxruntime:fp32,onnxruntime:int8 --variants split
      fomm-bench --backends torch:fp32,torch:fp16 --device cuda   (a GPU without TensorRT)
    """
    # Output paths are checked before the benchmark runs, so a typo cannot lose its results. They are
    # reports: an existing one is replaced.
    for path, option, suffix in ((json_path, "--json", ".json"), (md_path, "--markdown", ".md"),
                                 (chart_path, "--chart", ".png")):
        if path is not None:
            check_output_file(path, force=True, option=option, suffixes=(suffix,))
    if onnx_dir is not None:
        from fomm_deploy.runtime.graphs import load_exported

        recorded = load_exported(onnx_dir).config
        if config is not None and resolve_config(config).model_params != recorded.model_params:
            raise InputError(f"--onnx {onnx_dir} was exported with config '{recorded.name}', not '{config}'; drop "
                             f"--config (the export's is used) or pass --config {shlex.quote(recorded.name)}")
        cfg = recorded
    else:
        cfg = resolve_config(config)
    if backends:
        pairs = parse_backend_pairs(backends)
    else:
        pairs = available_backends()
        if device and device.startswith("cuda"):
            pairs.append(("torch", "fp16"))

    for backend, precision in pairs:  # torch fp16 on the CPU, --device for ONNX Runtime: say so before exporting
        if backend == "torch" or device is None:
            check_backend_device(backend, precision, device if backend == "torch" else None)
    chosen = parse_variants(variants)
    command = "fomm-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = run_bench(cfg, ckpt=ckpt, onnx_dir=onnx_dir, pairs=pairs, variants=chosen, warmup=warmup, iters=iters,
                       threads=threads, command=command, log=lambda m: click.echo(m, err=True), device=device,
                       peak=peak, peers=peers)
    table = markdown_table(result)
    click.echo(table)
    click.echo(f"fomm-bench finished in {result.seconds:.0f} s"
               + (f" (export {result.export_seconds:.0f} s)" if result.export_seconds else ""))
    if json_path:
        write_json(result, json_path)
        click.echo(f"wrote {json_path}")
    if md_path:
        from fomm_deploy.runtime.core.fileio import atomic_path

        with atomic_path(md_path) as tmp:
            tmp.write_text(f"Command: `{command}`\n\n" + table)
        click.echo(f"wrote {md_path}")
    if chart_path:
        draw_chart(result, chart_path)
        click.echo(f"wrote {chart_path}")
