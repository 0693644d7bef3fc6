"""``StageTimer``: how long each live stage takes and how fast results come out."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class StageTimer:
    """Moving averages (over the last ``window`` samples) of per-stage milliseconds and of the output rate.

    Thread-safe: every stage adds its own timings.
    """

    def __init__(self, window: int = 30) -> None:
        self._ms: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._window = window
        self._outputs: deque = deque(maxlen=window)

    def add(self, stage: str, ms: float) -> None:
        """Record that ``stage`` took ``ms`` milliseconds once."""
        with self._lock:
            self._ms.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def output(self, t: float) -> None:
        """Record that a result was shown at time ``t`` (``time.perf_counter()``)."""
        with self._lock:
            self._outputs.append(t)

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per stage, in the order the stages first reported."""
        with self._lock:
            return {k: float(np.mean(v)) for k, v in self._ms.items() if v}

    def fps(self) -> float:
        """Results shown per second over the window; 0 with fewer than two."""
        with self._lock:
            if len(self._outputs) < 2:
                return 0.0
            span = self._outputs[-1] - self._outputs[0]
            return (len(self._outputs) - 1) / span if span > 0 else 0.0
