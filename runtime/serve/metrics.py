"""Counters, gauges and histograms for ``/metrics``, written in Prometheus' text exposition format (0.0.4).

Hand-written (a few dozen lines) rather than a dependency: the server needs only labelled counters, gauges and
fixed-bucket histograms. Thread-safe: the batching worker and the request threads record into it.
"""

from __future__ import annotations

import math
import threading

# Seconds; from 1 ms (a 64x64 model's stage) to 10 s (a CPU animating a file).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _number(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metrics:
    """The server's metrics. ``describe`` declares a family once; ``inc`` / ``set`` / ``observe`` record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, tuple[str, str, tuple]] = {}  # name -> (type, help, buckets)
        self._values: dict[str, dict[tuple, float]] = {}
        self._hist: dict[str, dict[tuple, list]] = {}  # -> [bucket counts..., sum, count]

    def describe(self, name: str, kind: str, help: str, buckets: tuple = LATENCY_BUCKETS) -> None:
        self._families[name] = (kind, help, tuple(buckets))
        self._values.setdefault(name, {})
        self._hist.setdefault(name, {})

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = float(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets = self._families[name][2]
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self._hist[name].setdefault(key, [0] * len(buckets) + [0.0, 0])
            for i, b in enumerate(buckets):
                if value <= b:
                    h[i] += 1
            h[-2] += value
            h[-1] += 1

    def render(self) -> str:
        """Every family in the text exposition format."""
        lines = []
        with self._lock:
            for name, (kind, help, buckets) in self._families.items():
                lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    for key, h in self._hist[name].items():
                        labels = dict(key)
                        for b, count in zip(buckets, h):
                            lines.append(f"{name}_bucket{_labels({**labels, 'le': _number(b)})} {count}")
                        lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {h[-1]}")
                        lines.append(f"{name}_sum{_labels(labels)} {_number(h[-2])}")
                        lines.append(f"{name}_count{_labels(labels)} {h[-1]}")
                else:
                    values = self._values[name] or {(): 0.0}
                    for key, v in values.items():
                        lines.append(f"{name}{_labels(dict(key))} {_number(v)}")
        return "\n".join(lines) + "\n"


def server_metrics() -> Metrics:
    """The families fomm-serve records."""
    m = Metrics()
    m.describe("fomm_serve_sessions", "gauge", "Live WebSocket sessions open now.")
    m.describe("fomm_serve_sessions_total", "counter", "Live WebSocket sessions opened.")
    m.describe("fomm_serve_frames_total", "counter", "Live frames animated and sent back.")
    m.describe("fomm_serve_frames_dropped_total", "counter",
               "Live frames replaced by a newer one before they were processed (newest frame wins).")
    m.describe("fomm_serve_stage_seconds", "histogram",
               "Per-stage latency of live frames: decode, framing, queue, inference, encode.")
    m.describe("fomm_serve_batch_size", "histogram", "Sessions' frames per generator call.", BATCH_BUCKETS)
    m.describe("fomm_serve_animate_active", "gauge", "POST /v1/animate requests being served now.")
    m.describe("fomm_serve_animate_requests_total", "counter", "POST /v1/animate requests, by status code.")
    m.describe("fomm_serve_animate_seconds", "histogram", "Time to render a POST /v1/animate request.")
    return m
