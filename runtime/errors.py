"""Typed errors of the runtime. The CLIs turn them into one-line messages and a non-zero exit."""


class FommError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class KeypointError(FommError, ValueError):
    """Keypoints that cannot be used (wrong shape, degenerate layout)."""
