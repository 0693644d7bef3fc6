"""Typed errors of fomm-deploy. The CLIs turn them into one-line messages and a non-zero exit."""

from __future__ import annotations


class FommError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class KeypointError(FommError, ValueError):
    """Keypoints that cannot be used (wrong shape, degenerate layout)."""


class InputMismatchError(FommError, ValueError):
    """A graph was fed inputs that break its contract (name, dtype or shape)."""


class ContractError(FommError, ValueError):
    """An exported graph breaks the graph contract (opset, op types, GridSample mode, I/O)."""


class ParityError(FommError, AssertionError):
    """Outputs of two backends differ by more than the tolerance table allows; lists every failing output."""

    def __init__(self, graph: str, failures: list[str]) -> None:
        self.graph = graph
        self.failures = list(failures)
        super().__init__(f"{graph}: outputs differ beyond tolerance: " + "; ".join(self.failures))


class ImageError(FommError, ValueError):
    """An input image cannot be read or used."""


class VideoError(FommError, ValueError):
    """A video cannot be read or written."""
