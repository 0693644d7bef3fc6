"""The PyTorch model as a backend: the reference for parity and the upstream-style baseline.

The only runtime module that touches torch, and only inside ``activate()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import FommConfig
from ..contract import GraphSpec
from .base import Backend


class TorchBackend(Backend):
    """Runs ``kp_detector`` or ``generator`` of a checkpoint in eager PyTorch (fp32, no_grad)."""

    kind = "torch"

    def __init__(self, spec: GraphSpec, checkpoint: str | Path, config: FommConfig, *, device: str = "cpu",
                 name: str | None = None) -> None:
        super().__init__(spec, name=name)
        self.checkpoint = Path(checkpoint)
        self.config = config
        self.device = device
        self.module = None

    def _activate(self) -> None:
        import torch  # noqa: F401 - deliberately lazy

        from fomm_deploy.training.checkpoint import load_checkpoint
        from fomm_deploy.training.model.wrappers import flat_module

        models = load_checkpoint(self.checkpoint, self.config, device=self.device).models
        self.module = flat_module(self.spec.name, models, self.config.estimate_jacobian)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in self.spec.input_names]
            out = self.module(*args)
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.cpu().numpy() for n, o in zip(self.spec.output_names, out)}

    def _deactivate(self) -> None:
        self.module = None
