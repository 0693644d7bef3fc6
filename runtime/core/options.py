"""The click options the fomm-* commands share: one factory per option, so that every command that takes
``--backend``, ``--precision``, ``--device``, ``--providers``, ``--onnx``, ``--ckpt`` and the others
declares it with the same name, metavar, help and check. The names they accept and their checks are the
tables of :mod:`.names`."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import InputError
from .names import BACKENDS, DEVICE_FORMS, ORT_PROVIDERS, parse_device, parse_providers
from .precision import PRECISIONS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def backend_option(default: str = "onnxruntime", *, auto: bool = False, help: str | None = None) -> Decorator:
    choices = (["auto"] if auto else []) + list(BACKENDS)
    text = help or ("onnxruntime: ONNX Runtime (CPU by default); tensorrt: TensorRT engines on an NVIDIA GPU; "
                    "torch: the PyTorch reference (needs the checkpoint).")
    return click.option("--backend", type=click.Choice(choices), default=default, show_default=True, help=text)


def precision_option(default: str | None = "fp32", *, help: str | None = None) -> Decorator:
    text = help or ("Graphs to run: fp32 (*.onnx), fp16 (*.fp16.onnx, mixed precision for GPUs) or int8 "
                    "(*.int8.onnx, ONNX Runtime on CPU); export them with fomm-export --precision.")
    return click.option("--precision", type=click.Choice(list(PRECISIONS)), default=default,
                        show_default=default is not None, help=text)


def device_option(default: str | None = None, *,
                  help_suffix: str = "of the torch backend; --precision fp16 needs cuda. TensorRT always runs on "
                                     "CUDA; ONNX Runtime chooses with --providers. Default: the backend's own."
                  ) -> Decorator:
    """``--device`` (:func:`.names.parse_device`); a bad one is a one-line error, the same in every command."""
    return click.option("--device", default=default, metavar="DEVICE", callback=_device_callback,
                        show_default=default is not None, help=f"Device ({DEVICE_FORMS}) {help_suffix}")


def _device_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return parse_device(value)
    except InputError as exc:  # one Error: line and exit 1, as the commands' own checks, not a usage message
        raise click.ClickException(str(exc)) from None


def providers_option() -> Decorator:
    return click.option("--providers", default=None, metavar="LIST", callback=_providers_callback,
                        help="ONNX Runtime providers in priority order, from " + ", ".join(ORT_PROVIDERS)
                             + " (e.g. cuda,cpu; default: cpu). Only for --backend onnxruntime.")


def _providers_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    try:
        return parse_providers(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def local_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """Click callback for input files: a URL gets a clear refusal (click's Path would mangle it)."""
    if value is None:
        return None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        raise click.BadParameter(f"{value}: URLs are not supported; download the file and pass its path")
    return Path(value)


class FiniteFloat(click.FloatRange):
    """A float option's type that refuses ``nan`` and ``inf`` (which Python's ``float()`` accepts and every range
    check lets through: ``nan`` compares false with any bound), with optional bounds as :class:`click.FloatRange`.
    Every float option of the fomm-* commands has this type."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a number such as 1.5", param, ctx)
        return number


def max_frames_option(help: str) -> Decorator:
    """``--max-frames N``; the command calls :func:`.names.check_max_frames` on it."""
    return click.option("--max-frames", type=int, default=None, metavar="N", help=help)


def relative_option() -> Decorator:
    return click.option("--relative/--absolute", default=True, show_default=True,
                        help="Transfer the driving motion relative to the reference pose (recommended), or copy "
                             "the driving keypoints as they are.")


def adapt_scale_option() -> Decorator:
    # On everywhere: the portrait and the driver are different people, whose faces fill the frame
    # differently; upstream's README runs its demo with --relative --adapt_scale for the same reason.
    return click.option("--adapt-scale/--no-adapt-scale", default=True, show_default=True,
                        help="Scale the motion by the ratio of the portrait's and the driver's keypoint spreads "
                             "(on by default, as upstream's demo is run: different faces fill the frame differently).")


# The start of each shared option's help; a command continues the sentence with what the option is for there.
BACKENDS_HELP = ("Comma-separated backend[:precision] items, the backends from " + ", ".join(BACKENDS)
                 + ", the precisions from " + ", ".join(PRECISIONS))
CKPT_HELP = "Checkpoint in upstream's layout (vox-cpk.pth.tar, or one fomm-train wrote)"
CONFIG_HELP = "Bundled config (vox-256, vox-adv-256, taichi-256, synthetic-faces, tiny-test, ...) or a YAML file"
ONNX_HELP = "Folder written by fomm-export (holds manifest.json)."


def ckpt_option(help_suffix: str, *, required: bool = False, alias: str | None = None) -> Decorator:
    """``--ckpt FILE`` (``ckpt``); ``help_suffix`` continues :data:`CKPT_HELP`. Whether it exists is the
    command's check, made when it reads the file (so that output paths can be refused before)."""
    return click.option("--ckpt", *((alias,) if alias else ()), "ckpt", required=required, default=None,
                        metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
                        help=CKPT_HELP + help_suffix)


def config_option(help_suffix: str = ".", *, default: str | None = None, required: bool = False) -> Decorator:
    """``--config NAME|PATH`` (``config``), for :func:`.config.resolve_config`; ``help_suffix`` continues
    :data:`CONFIG_HELP`."""
    return click.option("--config", "config", required=required, default=default, show_default=default is not None,
                        metavar="NAME|PATH", help=CONFIG_HELP + help_suffix)


def backends_option(help_suffix: str, *, default: str | None = None) -> Decorator:
    """``--backends LIST``; the command reads it with :func:`.names.parse_backend_pairs` (its one grammar),
    where each says what an item without a precision runs. ``help_suffix`` continues :data:`BACKENDS_HELP`."""
    return click.option("--backends", default=default, show_default=default is not None, metavar="LIST",
                        help=BACKENDS_HELP + help_suffix)


def onnx_dir_option(default: str | None = "exported", *, help_suffix: str = "", required: bool = False) -> Decorator:
    """``--onnx DIRECTORY`` (``onnx_dir``); the command reads it with ``graphs.load_exported``, which names
    what is wrong with a folder that is not an export."""
    return click.option("--onnx", "onnx_dir", required=required, default=default, show_default=default is not None,
                        type=click.Path(file_okay=False, path_type=Path), help=ONNX_HELP + help_suffix)


def frame_step_option() -> Decorator:
    """``--frame-step/--no-frame-step``: run each frame as the one ``frame_step`` graph (default when exported)."""
    return click.option("--frame-step/--no-frame-step", "frame_step", default=None,
                        help="Run each frame as one frame_step graph: keypoints, motion and generator in one call, "
                             "uint8 in and out (default when the export has it), or as the split graphs with the "
                             "motion computed on the host.")


COMPILE_CACHE_HELP = ("The first frame of each batch size compiles; the kernels are cached under "
                      "~/.cache/fomm-deploy/torch-compile (or $XDG_CACHE_HOME) for the next start, unless "
                      "$TORCHINDUCTOR_CACHE_DIR names another folder.")


def compile_option(default: bool | None = None, *, help: str | None = None) -> Decorator:
    """``--compile/--no-compile``: torch.compile for the torch backend (``None``: on CUDA); ``help`` replaces
    the first sentence of the help (what the default is), which :data:`COMPILE_CACHE_HELP` follows."""
    text = help or "With --backend torch: torch.compile the graphs (default on a CUDA device, off on the CPU)."
    return click.option("--compile/--no-compile", "compile", default=default, help=text + " " + COMPILE_CACHE_HELP)
