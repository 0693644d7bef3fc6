"""The name tables every command shares: backends, precisions, ONNX Runtime providers.

One table, one parser and one click option per concept, so that ``fomm-animate``, ``fomm-compare``,
``fomm-live`` and ``fomm-bench`` accept the same names with the same meaning and the same help text.
Importing this module imports no backend (and no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from .errors import InputError
from .precision import PRECISIONS

# Backend name -> the precisions it runs. torch is the fp32 reference, and on a CUDA device also runs the fp16
# graphs' precision policy (check_backend_device); int8 graphs are for ONNX Runtime on CPU.
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16"),
    "torch": ("fp32", "fp16"),
}
# Devices --device takes (the torch backend's; TensorRT always runs on CUDA, ONNX Runtime picks --providers).
DEVICES: tuple[str, ...] = ("cpu", "cuda")
# (backend, precision) pairs that need a CUDA device.
CUDA_ONLY: tuple[tuple[str, str], ...] = (("torch", "fp16"),)
BACKENDS: tuple[str, ...] = tuple(BACKEND_PRECISIONS)
# Short ONNX Runtime provider names (what --providers takes) -> ONNX Runtime's own names.
ORT_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def check_backend_precision(backend: str, precision: str) -> None:
    """Raise :class:`InputError` unless ``backend`` can run graphs of ``precision``."""
    if backend not in BACKEND_PRECISIONS:
        raise InputError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if precision not in BACKEND_PRECISIONS[backend]:
        if backend == "torch":
            why = "the torch backend runs fp32 (the reference), or fp16 with --device cuda"
        elif precision == "int8":
            why = "the int8 graphs are for ONNX Runtime on CPU; TensorRT runs fp32 or fp16"
        else:
            why = f"{backend} runs {', '.join(BACKEND_PRECISIONS[backend])}"
        raise InputError(f"{backend} cannot run {precision}: {why}")


def check_backend_device(backend: str, precision: str, device: str | None) -> str:
    """The device ``backend`` runs ``precision`` on (``device``, or the backend's default when ``None``).

    Raises:
        InputError: an unknown device, torch fp16 on the CPU, ONNX Runtime given --device (it takes
            --providers), TensorRT given a CPU.
    """
    check_backend_precision(backend, precision)
    if device is not None:
        base = device.split(":", 1)[0]
        if base not in DEVICES or (":" in device and not device.split(":", 1)[1].isdigit()):
            raise InputError(f"unknown device '{device}'; choose from {', '.join(DEVICES)} (or cuda:N)")
    if backend == "onnxruntime":
        if device not in (None, "cpu"):
            raise InputError("--device is for the torch backend; ONNX Runtime chooses its device with --providers "
                             "(e.g. --providers cuda,cpu)")
        return "cpu"
    if backend == "tensorrt":
        if device is not None and not device.startswith("cuda"):
            raise InputError("the TensorRT backend runs on a CUDA GPU only; drop --device or pass --device cuda")
        return device or "cuda"
    device = device or "cpu"
    if (backend, precision) in CUDA_ONLY and not device.startswith("cuda"):
        raise InputError(f"{backend} runs {precision} on a CUDA GPU only (the fp16 policy of the *.fp16.onnx "
                         "graphs in half precision); pass --device cuda, or use --precision fp32 on the CPU")
    return device


def parse_providers(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"cuda,cpu"`` -> ``("cuda", "cpu")``; ``None``/empty -> ``None`` (the backend's default).

    Raises:
        InputError: a name that is not in :data:`ORT_PROVIDERS`.
    """
    if value is None:
        return None
    items = [p.strip().lower() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()]
    for p in items:
        if p not in ORT_PROVIDERS:
            raise InputError(f"unknown ONNX Runtime provider '{p}'; choose from {', '.join(ORT_PROVIDERS)}")
    return tuple(items) or None


def check_max_frames(value: int | None) -> None:
    """Raise :class:`InputError` unless ``value`` (--max-frames) is None or at least 1. Checked by the commands,
    not by click, so that 0 is a one-line error, not a usage message."""
    if value is not None and value < 1:
        raise InputError(f"--max-frames must be at least 1, got {value}")


def parse_backend_pairs(value: str) -> list[tuple[str, str]]:
    """``"onnxruntime:int8,torch"`` -> ``[("onnxruntime", "int8"), ("torch", "fp32")]`` (fp32 when omitted)."""
    pairs = []
    for item in value.split(","):
        if not item.strip():
            continue
        backend, _, precision = item.strip().partition(":")
        pair = (backend, precision or "fp32")
        try:
            check_backend_precision(*pair)
        except InputError as exc:
            raise InputError(f"--backends item {item.strip()!r}: {exc}") from None
        if pair in pairs:
            raise InputError(f"--backends names {item.strip()!r} twice")
        pairs.append(pair)
    if not pairs:
        raise InputError("--backends is empty; give backend:precision pairs such as onnxruntime:fp32")
    return pairs


# ---- click options: the same names, defaults and help text in every command ---------------------------

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


def device_option(default: str | None = None, *, help: str | None = None) -> Decorator:
    text = help or ("Device of the torch backend: cpu or cuda (cuda:N); --precision fp16 needs cuda. TensorRT "
                    "always runs on CUDA; ONNX Runtime chooses with --providers. Default: the backend's own.")
    return click.option("--device", default=default, metavar="DEVICE", callback=_device_callback,
                        show_default=default is not None, help=text)


def _device_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    base, _, index = value.partition(":")
    if base not in DEVICES or (index and not index.isdigit()) or (index and base != "cuda"):
        raise click.BadParameter(f"unknown device '{value}'; choose from {', '.join(DEVICES)} (or cuda:N)")
    return value


def providers_option() -> Decorator:
    return click.option("--providers", default=None, metavar="LIST", callback=_providers_callback,
                        help="ONNX Runtime providers in priority order, from " + ", ".join(ORT_PROVIDERS)
                             + " (e.g. cuda,cpu; default: cpu). Only for --backend onnxruntime.")


def _providers_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    try:
        return parse_providers(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def local_file(ctx: click.Context, param: click.Parameter, value: str | None):
    """Click callback for input files: a URL gets a clear refusal (click's Path would mangle it)."""
    import re
    from pathlib import Path

    if value is None:
        return None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        raise click.BadParameter(f"{value}: URLs are not supported; download the file and pass its path")
    return Path(value)


def max_frames_option(help: str) -> Decorator:
    """``--max-frames N``; the command calls :func:`check_max_frames` on it."""
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


def ckpt_option(help: str, required: bool = False) -> Decorator:
    from pathlib import Path

    return click.option("--ckpt", "ckpt", required=required, type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help=help)


def onnx_dir_option(default: str | None = "exported") -> Decorator:
    from pathlib import Path

    return click.option("--onnx", "onnx_dir", default=default, show_default=default is not None,
                        type=click.Path(file_okay=False, path_type=Path),
                        help="Folder written by fomm-export (holds manifest.json).")
