"""One interface for every backend (after Polygraphy's runners): activate, infer by tensor name, deactivate.

``infer`` checks the feed against the graph contract once, for every backend, then calls ``_infer``.
Inputs and outputs are numpy arrays of the contract's dtypes (float32, and uint8 for frame_step's frames);
fp16 lives inside the graphs.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping

import numpy as np

from ..core.contract import GraphSpec, check_feed
from ..core.errors import ContractError


class Backend(abc.ABC):
    """Runs one exported graph. Cheap to construct; loads and allocates in ``activate()``.

    Lifecycle: ``Backend(spec, ...)`` only records its arguments; ``activate()`` loads the graph or engine
    and allocates (idempotent, returns ``self``); ``infer(feed)`` may be called any number of times, also from
    another thread than the one that activated it (the TensorRT backend makes its CUDA context current
    there for each call), but from one thread at a time; ``deactivate()`` frees everything
    and may be followed by another ``activate()``. ``with backend:`` does activate/deactivate.

    Subclasses implement ``_activate``, ``_infer`` (gets a contract-checked feed, returns at least every
    contract output) and optionally ``_deactivate``. ``last_inference_time`` is the wall time in seconds of
    the last ``infer`` (host to host, copies included).
    """

    kind: str = "base"

    def __init__(self, spec: GraphSpec, *, name: str | None = None) -> None:
        self.spec = spec
        self.name = name or f"{self.kind}:{spec.name}"
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> "Backend":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            feed: every contract input by name, of the contract's dtype and shape (B is free).
        Returns:
            every contract output by name. Arrays may be reused by the next call; copy to keep them.
        Raises:
            InputMismatchError: the feed breaks the contract.
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() (or use 'with') before infer()")
        feed = dict(feed)
        check_feed(self.spec, feed)
        start = time.perf_counter()
        out = self._infer(feed)
        self.last_inference_time = time.perf_counter() - start
        missing = [n for n in self.spec.output_names if n not in out]
        if missing:
            raise ContractError(f"{self.name}: backend returned no {missing}; the engine/graph breaks the contract")
        return {n: out[n] for n in self.spec.output_names}

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        pass
