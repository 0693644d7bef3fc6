"""The export's engines, loaded once per server and shared by every request and session.

Backends are not assumed thread-safe (TensorRT reuses its output buffers; one GPU runs one thing at a time),
so every call goes through one lock, and its outputs are copied before the lock is released.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..animator import Animator
from ..graphs import ExportedModel, load_exported, open_animator


class SharedBackend:
    """A backend behind the server's engine lock: ``infer`` runs alone and returns copies."""

    def __init__(self, backend, lock: threading.Lock) -> None:
        self.backend = backend
        self.spec = backend.spec
        self._lock = lock

    def infer(self, feed) -> dict[str, np.ndarray]:
        with self._lock:
            return {k: np.array(v, copy=True) for k, v in self.backend.infer(feed).items()}

    def activate(self) -> "SharedBackend":
        """Activate the backend (a no-op when it is; with frame_step, generator_frame opens on first use)."""
        with self._lock:
            self.backend.activate()
        return self


def dynamic_batch(spec) -> bool:
    """Whether every input of a graph takes the contract's dynamic batch axis ``B``."""
    return all(t.shape and t.shape[0] == "B" for t in spec.inputs)


class Engines:
    """The activated backends of one export folder, and animators over them (one per request or session).

    Args:
        onnx_dir, backend, precision, providers, device: as fomm-animate's options.
        compile: the torch backend's ``torch.compile``, off unless asked for (also on CUDA, unlike
            fomm-animate): a server meets many batch sizes, only live sessions' ``frame_step`` batches are padded
            to :attr:`buckets`, and ``torch.compile(fullgraph=True)`` fails a call beyond its recompile limit
            (8 shapes of a graph).
        max_batch: the most sessions' frames per generator call; 1 when the graphs have no dynamic batch.
    """

    def __init__(self, onnx_dir: str | Path, backend: str = "onnxruntime", precision: str = "fp32", *,
                 providers=None, device: str | None = None, compile: bool = False, max_batch: int = 8) -> None:
        self.exported: ExportedModel = load_exported(onnx_dir)
        opened = open_animator(self.exported, backend, precision, providers=providers, device=device,
                               compile=compile)
        self.lock = threading.Lock()
        self.kp_detector = SharedBackend(opened.kp_detector, self.lock)
        self.split = opened.generator_frame is not None
        self.frame_step = None if opened.frame_step is None else SharedBackend(opened.frame_step, self.lock)
        if self.split:
            self.source_encoder = SharedBackend(opened.source_encoder, self.lock)
            self.generator = SharedBackend(opened.generator_frame, self.lock)
        else:
            self.source_encoder = None
            self.generator = SharedBackend(opened.generator, self.lock)
        self.graphs = opened.graphs  # what animates each frame, for the start-up line and /metrics
        per_frame = [self.kp_detector, self.generator] + ([self.frame_step] if self.frame_step else [])
        batchable = all(dynamic_batch(b.spec) for b in per_frame)
        self.max_batch = max(1, max_batch) if batchable else 1
        # frame_step batches are padded to fixed sizes (1, 2, 4, ... max_batch) where a new batch size costs a
        # set-up: the torch backend on CUDA captures a CUDA graph (or compiles, with compile) per size and keeps
        # each; TensorRT keeps one size's buffers (and CUDA graph) and re-allocates them whenever the size
        # changes, which fewer sizes make rarer, not free.
        per_shape = backend == "tensorrt" or (backend == "torch" and str(device or "").startswith("cuda"))
        self.buckets: tuple[int, ...] | None = (
            tuple(sorted({min(2 ** i, self.max_batch) for i in range(self.max_batch.bit_length() + 1)}))
            if per_shape and self.frame_step is not None else None)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.exported.frame_size

    def animator(self, *, relative: bool = True, adapt_scale: bool = True, fit: str = "crop") -> Animator:
        """A new ``Animator`` (its own source, reference and options) over the shared engines."""
        if self.split:
            return Animator(self.kp_detector, None, self.frame_size, source_encoder=self.source_encoder,
                            generator_frame=self.generator, frame_step=self.frame_step, relative=relative,
                            adapt_scale=adapt_scale, fit=fit)
        return Animator(self.kp_detector, self.generator, self.frame_size, relative=relative,
                        adapt_scale=adapt_scale, fit=fit)
