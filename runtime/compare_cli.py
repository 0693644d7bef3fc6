"""``fomm-compare``: run the same inputs through two backends and check every output against the tolerance table
(torch only for a torch backend): the two graphs, the per-source split when both sides have it, and the
``frame_step`` graph when both have that."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from .core.cli_common import CONTEXT, user_errors, version_option
from .core.compare import compare
from .core.errors import InputError, ParityError
from .core.feeds import FeedSet, feed_set, kp_from_outputs
from .core.names import parse_backend_pairs
from .core.options import (backends_option, ckpt_option, config_option, device_option, onnx_dir_option,
                           precision_option, providers_option)
from .graphs import GRAPHS, SPLIT_GRAPHS, STEP_GRAPH, load_exported, make_backend
from .media.preprocess import prepare_frame, to_nchw
from .media.samples import head_motion, sample_face


def _compare_feeds(kind: str, exported, reference: dict, batch: int, seed: int) -> FeedSet:
    """One feed per graph: ``batch`` driving frames animating one source, keypoints (and the source encoding)
    from the reference backends, so both backends see the same inputs."""
    h, w = exported.frame_size
    if kind == "real":
        frames = head_motion(prepare_frame(sample_face(), (h, w)), batch + 1, seed=seed)
        source, driving = to_nchw(frames[:1]), to_nchw(frames[1:])
    else:
        rng = np.random.default_rng(seed)
        source = rng.uniform(0, 1, (1, 3, h, w)).astype(np.float32)
        driving = rng.uniform(0, 1, (batch, 3, h, w)).astype(np.float32)
    kp_source = kp_from_outputs(reference["kp_detector"].infer({"image": source}))
    kp_driving = kp_from_outputs(reference["kp_detector"].infer({"image": driving}))
    encoded = None
    if "source_encoder" in reference:
        encoded = {k: v.copy() for k, v in reference["source_encoder"].infer({"source": source}).items()}
    return feed_set(source, kp_source, driving, kp_driving, encoded=encoded)


@click.command(context_settings=CONTEXT)
@onnx_dir_option()
@backends_option("; exactly two: the first is the reference and runs fp32, the second runs its own precision, "
                 "else --precision. E.g. onnxruntime,tensorrt:fp16.", default="torch,onnxruntime")
@precision_option(help="Precision of the second backend when --backends does not name one (the first, the "
                       "reference, always runs fp32); torch runs fp16 on --device cuda only.")
@click.option("--inputs", type=click.Choice(["real", "random"]), default="real", show_default=True,
              help="real: the bundled portrait under synthetic head motion; random: uniform noise images.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Driving frames per comparison (and the batch size the graphs are run at).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic head motion or random images.")
@ckpt_option(" for the torch backend (default: the one recorded in the manifest).")
@config_option(", for the torch backend (default: the one recorded in the manifest).")
@providers_option()
@device_option()
@version_option()
@user_errors
def compare_main(onnx_dir: Path, backends: str, precision: str, inputs: str, batch: int, seed: int,
                 ckpt: Path | None, config: str | None, providers: tuple[str, ...] | None,
                 device: str | None) -> None:
    """Run the same inputs through two backends and report every output's error against the tolerance table.

    Exits non-zero when an output is over its tolerance. This is how a TensorRT engine is checked against
    ONNX Runtime, and ONNX Runtime against the PyTorch model. Every graph the export has at both sides'
    precisions is checked: kp_detector and generator, the per-source split (source_encoder, generator_frame)
    and frame_step. The torch backend runs eager (no torch.compile), as the reference.

    \b
    Example:
      fomm-compare --onnx exported/vox --backends torch,onnxruntime
      fomm-compare --onnx exported/vox --backends onnxruntime,tensorrt:fp16
      fomm-compare --onnx exported/vox --backends onnxruntime,torch:fp16 --device cuda
    """
    names, precisions = _compared(backends, precision)
    exported = load_exported(onnx_dir)
    split_files = [("fp32" if name == "torch" else p) for name, p in zip(names, precisions)]
    graphs = list(GRAPHS) + (list(SPLIT_GRAPHS) if all(exported.has_split(p) for p in split_files) else [])
    if all(exported.has_frame_step(p) for p in split_files):
        graphs.append(STEP_GRAPH)
    # --device goes to the torch backends (the others refuse it: names.check_backend_device). torch runs eager:
    # the reference is the model itself, not Inductor's kernels, and nothing compiles first.
    runners = [{g: make_backend(name, exported, g, prec, ckpt=ckpt, config=config, providers=providers,
                                device=device if name == "torch" else None, compile=False).activate()
                for g in graphs} for name, prec in zip(names, precisions)]
    feeds = _compare_feeds(inputs, exported, runners[0], batch, seed)
    click.echo(f"{names[0]} (reference) vs {names[1]} ({precisions[1]}), {inputs} inputs, batch {batch}")
    header = f"{'graph':<16}{'output':<16}{'max abs':>11}{'mean abs':>11}{'tolerance':>11}  {'':<6}extra"
    click.echo(header)
    click.echo("-" * len(header))
    failures = []
    for graph in graphs:
        ref = {k: v.copy() for k, v in runners[0][graph].infer(feeds[graph]).items()}
        result = compare(graph, runners[1][graph].infer(feeds[graph]), ref, precision=precisions[1],
                         frame_size=exported.frame_size)
        failures += [f"{graph}.{f}" for f in result.tolerance_failures()]
        for output, e in result.outputs.items():
            ok = e.finite and e.max_abs <= result.tolerances[output]
            extra = (f"PSNR {e.psnr_db:.1f} dB" if e.psnr_db is not None else
                     f"{e.kp_max_px:.3f} px" if e.kp_max_px is not None else "")
            click.echo(f"{graph:<16}{output:<16}{e.max_abs:>11.3g}{e.mean_abs:>11.3g}{result.tolerances[output]:>11.3g}"
                       f"  {'ok' if ok else 'OVER':<6}{extra}")
    if failures:
        raise ParityError(f"{names[1]} vs {names[0]}", failures)
    click.echo("all outputs within tolerance")


def _compared(backends: str, precision: str) -> tuple[list[str], list[str]]:
    """The two backends of --backends and their precisions: the first is the fp32 reference; the second runs
    the precision its item names, else --precision (which then selects the tolerances)."""
    pairs = parse_backend_pairs(backends, omitted=("fp32", precision))
    if len(pairs) != 2:
        raise InputError(f"--backends takes exactly two backend[:precision] items separated by a comma, got "
                         f"{backends!r}")
    (reference, reference_precision), (second, second_precision) = pairs
    if reference_precision != "fp32":
        raise InputError(f"--backends {backends}: the first backend is the reference and runs fp32; name the "
                         f"other precision on the second (--backends {reference},{second}:{reference_precision})")
    given = click.get_current_context().get_parameter_source("precision")
    if second_precision != precision and given is not ParameterSource.DEFAULT:
        raise InputError(f"--backends {backends} runs {second} at {second_precision}, --precision asks for "
                         f"{precision}; give the precision once")
    return [reference, second], [reference_precision, second_precision]
