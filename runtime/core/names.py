"""The name tables every command shares: backends, precisions, devices, ONNX Runtime providers, and their checks.

One table and one parser per concept, so that ``fomm-animate``, ``fomm-compare``, ``fomm-live``,
``fomm-serve``, ``fomm-bench`` and ``fomm-train`` accept the same names with the same meaning; the click
options that read them are in :mod:`.options`. Data and checks only: no click, no backend, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError
from .precision import PRECISIONS

# Backend name -> the precisions it runs. torch is the fp32 reference, and on a CUDA device also runs the fp16
# graphs' precision policy (check_backend_device); int8 graphs are for ONNX Runtime on CPU.
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16"),
    "torch": ("fp32", "fp16"),
}
# Devices --device takes: cpu, or cuda with an optional index (the torch backend's and fomm-train's; TensorRT
# always runs on CUDA, ONNX Runtime picks --providers). A CPU has no index: cpu:0 is refused.
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DEVICE_FORMS = "cpu, cuda or cuda:N"
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


def parse_device(value: str | None) -> str | None:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, case and surrounding spaces ignored, in that spelling;
    ``None`` (not given) stays ``None``. The one parser of devices: every command's --device and the API's.

    Raises:
        InputError: anything else (``cpu:0``, ``cuda:``, ``mps``), with the same one-line message everywhere.
    """
    if value is None:
        return None
    device = value.strip().lower()
    base, colon, index = device.partition(":")
    if base not in DEVICES or (colon and (base != "cuda" or not (index.isascii() and index.isdigit()))):
        raise InputError(f"unknown device '{value.strip()}'; use {DEVICE_FORMS}")
    return device


def check_backend_device(backend: str, precision: str, device: str | None) -> str:
    """The device ``backend`` runs ``precision`` on (``device``, or the backend's default when ``None``).

    Raises:
        InputError: an unknown device (:func:`parse_device`), torch fp16 on the CPU, ONNX Runtime given
            --device (it takes --providers), TensorRT given a CPU.
    """
    check_backend_precision(backend, precision)
    device = parse_device(device)
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


def parse_backend_pairs(value: str, omitted: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``--backends``, the one grammar of every command that takes it: comma-separated ``backend[:precision]``
    items. ``"onnxruntime:int8,torch"`` -> ``[("onnxruntime", "int8"), ("torch", "fp32")]``: an item without a
    precision gets ``omitted[i]`` (its place in the list), fp32 past the end of ``omitted``.

    Raises:
        InputError: an unknown backend or precision, a precision the backend does not run, an item named
            twice, or no item at all.
    """
    pairs = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        backend, _, precision = item.partition(":")
        pair = (backend, precision or (omitted[len(pairs)] if len(pairs) < len(omitted) else "fp32"))
        try:
            check_backend_precision(*pair)
        except InputError as exc:
            raise InputError(f"--backends item {item!r}: {exc}") from None
        if pair in pairs:
            raise InputError(f"--backends names {item!r} twice: a backend at one precision, compared or measured "
                             "with itself, tells nothing; name another backend or precision")
        pairs.append(pair)
    if not pairs:
        raise InputError("--backends is empty; give backend:precision pairs such as onnxruntime:fp32")
    return pairs
