"""Comparison of two sets of graph outputs: the one place that measures and judges them (numpy only).

Used by ``fomm-export`` (ONNX Runtime vs PyTorch, fp16 / int8 vs fp32), ``fomm-compare`` (backend vs backend)
and the tests. Every output gets its max and mean abs error; ``prediction`` also its PSNR, ``kp_value`` its
error in pixels of the model frame. Two judgements exist:

* :meth:`Comparison.tolerance_failures`: max abs error per output against the contract's tolerance table
  (``contract.TOLERANCES``), for two implementations of the same precision;
* :meth:`Comparison.budget_failures`: keypoint pixels and prediction PSNR against a reduced-precision
  budget (``contract.BUDGETS``), for fp16 / int8 against fp32.

:meth:`Comparison.raise_for` raises one :class:`ParityError` that lists every failing output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .precision import Budget, tolerance
from .errors import ParityError

__all__ = ["Comparison", "IMAGE_PEAKS", "OutputError", "compare", "kp_pixel_error", "psnr"]

# The outputs that are animated images, and their peak value: PSNR is measured on them and judged by the budgets.
IMAGE_PEAKS: dict[str, float] = {"prediction": 1.0, "frame": 255.0}


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of ``a`` against ``b`` (images in [0, ``peak``]); ``inf`` when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def kp_pixel_error(a: np.ndarray, b: np.ndarray, frame_size: tuple[int, int]) -> tuple[float, float]:
    """(max, mean) keypoint error in pixels of an (H, W) frame, for keypoints (..., 2) as (x, y) in [-1, 1].

    A keypoint's error is the larger of its x and y errors, each scaled by half the frame's width / height.
    """
    h, w = frame_size
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    px = np.maximum(d[..., 0] * w / 2, d[..., 1] * h / 2)
    return float(px.max()), float(px.mean())


@dataclass(frozen=True)
class OutputError:
    """How one output differs from its reference."""

    output: str
    max_abs: float
    mean_abs: float
    finite: bool
    psnr_db: float | None = None  # images only (IMAGE_PEAKS)
    kp_max_px: float | None = None  # kp_value only, when the frame size is known
    kp_mean_px: float | None = None

    def to_dict(self) -> dict[str, float | bool]:
        d: dict[str, float | bool] = {"max_abs": self.max_abs, "mean_abs": self.mean_abs}
        if not self.finite:
            d["finite"] = False
        for name in ("psnr_db", "kp_max_px", "kp_mean_px"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        return d


@dataclass
class Comparison:
    """Every output of one graph (or chain of graphs) against a reference, and how it was judged."""

    label: str  # e.g. "generator.fp16.onnx vs generator.onnx"
    outputs: dict[str, OutputError]
    precision: str = "fp32"  # of the outputs under test; selects the tolerances
    tolerances: dict[str, float] = field(default_factory=dict)  # filled by tolerance_failures
    budget: Budget | None = None  # filled by budget_failures
    failures: list[str] = field(default_factory=list)

    def __getitem__(self, output: str) -> OutputError:
        return self.outputs[output]

    @property
    def psnr_db(self) -> float | None:
        """PSNR of the animated image: ``prediction`` (float) or ``frame`` (``frame_step``'s uint8)."""
        return next((self.outputs[n].psnr_db for n in IMAGE_PEAKS if n in self.outputs), None)

    @property
    def kp_max_px(self) -> float | None:
        return self.outputs["kp_value"].kp_max_px if "kp_value" in self.outputs else None

    def tolerance_failures(self, tolerances: Callable[[str, str], float] = tolerance) -> list[str]:
        """Judge max abs errors against ``tolerances(precision, output)``; records and returns the failures."""
        failures = []
        for name, e in self.outputs.items():
            atol = self.tolerances[name] = tolerances(self.precision, name)
            if not e.finite:
                failures.append(f"'{name}' has non-finite values")
            elif e.max_abs > atol:
                failures.append(f"'{name}' max abs error {e.max_abs:.3g} > tolerance {atol:.3g}")
        self.failures += failures
        return failures

    def budget_failures(self, budget: Budget) -> list[str]:
        """Judge keypoint pixels and prediction PSNR against ``budget``; records and returns the failures."""
        self.budget = budget
        failures = [f"'{name}' has non-finite values" for name, e in self.outputs.items() if not e.finite]
        kp, db = self.kp_max_px, self.psnr_db
        if kp is not None and kp > budget.kp_max_px:
            failures.append(f"keypoint error {kp:.3g} px > budget {budget.kp_max_px} px")
        if db is not None and db < budget.prediction_min_psnr_db:
            failures.append(f"prediction PSNR {db:.1f} dB < budget {budget.prediction_min_psnr_db} dB")
        self.failures += failures
        return failures

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for(self, failures: list[str] | None = None, hint: str = "") -> None:
        """Raise one :class:`ParityError` listing ``failures`` (default: all recorded), if there are any."""
        failures = self.failures if failures is None else failures
        if failures:
            raise ParityError(self.label, failures + ([hint] if hint else []))

    def summary(self) -> str:
        """One short line. Reduced precision: PSNR for images, pixels for keypoints; otherwise (and for
        intermediate outputs) the worst output's max abs error, relative to its tolerance when judged."""
        if self.precision != "fp32" and self.psnr_db is not None:
            return f"PSNR {self.psnr_db:.1f} dB"
        if self.precision != "fp32" and self.kp_max_px is not None:
            return f"{self.kp_max_px:.2f} px max"
        worst = max(self.outputs.values(),
                    key=lambda e: e.max_abs / self.tolerances[e.output] if self.tolerances else e.max_abs)
        return f"max abs {worst.max_abs:.2g} ({worst.output})"

    def to_dict(self) -> dict:
        d: dict = {"outputs": {n: dict(e.to_dict(), **({"tolerance": self.tolerances[n]} if n in self.tolerances
                                                         else {}))
                               for n, e in self.outputs.items()}}
        if self.psnr_db is not None:
            d["prediction_psnr_db"] = self.psnr_db
        if self.kp_max_px is not None:
            d["kp_max_px"] = self.kp_max_px
        if self.budget is not None:
            d["budget"] = self.budget.to_dict()
        d["passed"] = self.ok
        return d


def compare(label: str, ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], *, precision: str = "fp32",
            frame_size: tuple[int, int] | None = None, outputs: list[str] | None = None) -> Comparison:
    """Measure ``ours`` against ``ref`` for every output in ``outputs`` (default: all of ``ref``).

    Args:
        precision: of ``ours``; selects the tolerance row when the comparison is judged.
        frame_size: (H, W) of the model frame, for the keypoint error in pixels.
    """
    errors = {}
    for name in outputs or list(ref):
        a = np.asarray(ours[name])
        b = np.asarray(ref[name])
        if a.shape != b.shape:
            raise ParityError(label, [f"'{name}' has shape {a.shape}, the reference {b.shape}"])
        finite = bool(np.isfinite(a).all())
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        extra: dict[str, float] = {}
        if name in IMAGE_PEAKS:
            extra["psnr_db"] = psnr(a, b, IMAGE_PEAKS[name])
        elif name == "kp_value" and frame_size is not None:
            extra["kp_max_px"], extra["kp_mean_px"] = kp_pixel_error(a, b, frame_size)
        errors[name] = OutputError(name, float(err.max()) if err.size else 0.0,
                                   float(err.mean()) if err.size else 0.0, finite, **extra)
    return Comparison(label, errors, precision)
