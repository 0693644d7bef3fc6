"""``fomm-export``: checkpoint -> verified ONNX graphs for ONNX Runtime and TensorRT."""

from __future__ import annotations

import math
from pathlib import Path

import click
from tqdm import tqdm

from fomm_deploy.runtime.core.cli_common import CONTEXT, user_errors, version_option
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.core.options import ckpt_option, config_option
from fomm_deploy.runtime.core.precision import BUDGETS, EXPORT_PRECISIONS, Budget

from .publish import check_out_dir


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def psnr_budgets(values: tuple[str, ...], writes: tuple[str, ...]) -> dict[str, Budget]:
    """``--min-psnr PRECISION=DB`` values -> budgets replacing the contract's for those precisions (keypoint
    budget unchanged). ``writes``: the precisions the export writes.

    Raises:
        InputError: not PRECISION=DB, a precision without a budget or that the export does not write, a DB
            that is not a finite number, or a precision given twice.
    """
    budgets: dict[str, Budget] = {}
    for value in values:
        precision, sep, db = value.partition("=")
        precision = precision.strip()
        if not sep or precision not in BUDGETS:
            raise InputError(f"--min-psnr {value}: expected PRECISION=DB with PRECISION one of "
                             f"{', '.join(BUDGETS)}, e.g. --min-psnr int8=30")
        try:
            min_db = float(db)
        except ValueError:
            min_db = float("nan")
        if not math.isfinite(min_db):
            raise InputError(f"--min-psnr {value}: '{db}' is not a number of dB, e.g. --min-psnr {precision}=30")
        if precision not in writes:
            raise InputError(f"--min-psnr {value} sets the {precision} budget, and this export writes no "
                             f"{precision} graphs: add --precision {precision} (or all), or drop --min-psnr {value}")
        if precision in budgets:
            raise InputError(f"--min-psnr gives the {precision} budget twice; give it once")
        budgets[precision] = Budget(kp_max_px=BUDGETS[precision].kp_max_px, prediction_min_psnr_db=min_db)
    return budgets


@click.command(context_settings=CONTEXT)
@ckpt_option(" to export.", required=True)
@config_option(" whose networks the checkpoint holds.", default="vox-256")
@click.option("--out", "out_dir", default="exported", show_default=True, type=click.Path(path_type=Path),
              help="Output folder for the graphs and manifest.json.")
@click.option("--precision", type=click.Choice(list(EXPORT_PRECISIONS)), default="fp32", show_default=True,
              help="fp32 graphs only; fp16 adds mixed-precision *.fp16.onnx (TensorRT, GPUs); int8 adds *.int8.onnx "
                   "(ONNX Runtime on CPU; the keypoint detector and source encoder stay fp32); all adds both. The fp32 graphs are always written, as the reference.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Video whose frames calibrate and judge the int8 graphs (default: the bundled portrait under "
                   "synthetic head motion).")
@click.option("--min-psnr", "min_psnr", multiple=True, metavar="PRECISION=DB",
              help="Replace the graph contract's prediction PSNR budget of fp16 or int8 against fp32 ("
                   + ", ".join(f"{p} {b.prediction_min_psnr_db:g} dB" for p, b in BUDGETS.items())
                   + "), e.g. int8=30 to accept a lower int8 quality knowingly, or a higher value to demand more. "
                   "Every graph and the deployed split are gated by it; manifest.json records it. Repeatable.")
@click.option("--align-corners/--no-align-corners", default=None,
              help="Override the config's grid_sample convention. --align-corners reproduces how the published "
                   "checkpoints were trained (torch 1.0); the default (false) matches upstream code today.")
@click.option("--engine", is_flag=True, help="Also build TensorRT engines (needs tensorrt and a CUDA GPU).")
@click.option("--force", is_flag=True, help="Replace an output folder that an earlier fomm-export wrote: only when "
              "everything in it is listed in its manifest.json (or is the engines/ cache); a folder holding any "
              "other file, whatever its name, is refused and left as it is.")
@version_option()
@user_errors
def main(ckpt: Path, config: str, out_dir: Path, precision: str, calibration: Path | None,
         min_psnr: tuple[str, ...], align_corners: bool | None, engine: bool, force: bool) -> None:
    """Export an FOMM checkpoint to ONNX: kp_detector.onnx and generator.onnx (opset 16), the per-source
    split (source_encoder.onnx once per portrait, generator_frame.onnx per frame), optional fp16 and int8
    variants, and manifest.json.

    Every graph is checked against the graph contract (opset, operators TensorRT parses, GridSample mode
    and align_corners, input/output names and shapes), then run in ONNX Runtime on fresh inputs and
    compared with the PyTorch model. fp16 and int8 graphs are measured against fp32 (keypoint error in
    pixels, prediction PSNR; int8 on real frames), each graph alone and the deployed graphs chained end to
    end, and gated by the budgets of the graph contract. Nothing is written to --out unless all of that
    passes.

    \b
    Example:
      fomm-export --ckpt vox-cpk.pth.tar --config vox-256 --precision all --out exported/vox
    """
    from .exporter import run_export


    check_out_dir(out_dir, force)  # before the checkpoint is even read
    if calibration is not None and precision not in ("int8", "all"):
        raise InputError(f"--calibration calibrates the int8 graphs; --precision {precision} writes none: add "
                         "--precision int8 (or all), or drop --calibration")
    budgets = psnr_budgets(min_psnr, EXPORT_PRECISIONS[precision])
    cfg = resolve_config(config)
    if align_corners is not None:
        cfg = cfg.replace_model(align_corners=align_corners)
    n_steps = (2 * len(graph_specs(cfg)) + 3) * len(EXPORT_PRECISIONS[precision]) + 1
    with tqdm(total=n_steps, desc="fomm-export", unit="step", leave=False, disable=None,
              bar_format="{desc}: {n}/{total} {bar} {elapsed}") as bar:
        def progress(message: str) -> None:
            bar.set_description_str(message)
            if message != "loading checkpoint":
                bar.update(1)

        result = run_export(ckpt, cfg, out_dir, precision=precision, engine=engine, force=force, progress=progress,
                            calibration=calibration, budgets=budgets)
    click.echo(f"Exported {ckpt.name} with config {cfg.name or cfg.source} (align_corners "
               f"{str(cfg.align_corners).lower()}) to {result.out_dir}/ in {result.seconds:.1f} s")
    header = f"{'graph':<24}{'size':>10}{'opset':>7}  parity"
    click.echo(header)
    click.echo("-" * len(header))
    for r in result.graphs:
        click.echo(f"{r.file:<26}{_size(r.size_bytes):>10}{result.manifest.opset:>7}  {r.summary} vs {r.against}")
    click.echo("manifest.json")
    for name, comparison in result.pipelines.items():
        budget = comparison.budget
        click.echo(f"deployed {name:<17} {comparison.summary()} end to end vs fp32 (budget >= "
                   f"{budget.prediction_min_psnr_db:g} dB)")
