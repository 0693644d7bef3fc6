"""SIGINT and SIGTERM: what every part of the project does with them, in one place.

Two ways to meet a stop signal, both here:

* :class:`Unwinding` (every fomm-* command, through ``cli_common.user_errors``): the signal raises
  :class:`Stopped`, which unwinds the work like Ctrl-C so that every ``with`` block and ``finally`` cleans up;
  the first signal received wins over any exception its unwinding turns into; the process exits with
  :func:`exit_status`.
* :class:`StopRequest` (training, live mode): the first signal only asks the work to stop where it can
  finish cleanly (after a batch, between frames); later ones stop at once or are ignored.

Handlers can only be set in the main thread; elsewhere both leave the handlers alone.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

# The signals that stop a command: Ctrl-C, and what a service manager or `kill` sends.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handlers = dict[int, Any]


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``str()`` is the signal's name. A KeyboardInterrupt, so ``with`` blocks
    (video writers, staging folders) run their clean-up on the way out."""


def raise_stopped(signum: int, frame: Any) -> None:
    """A signal handler: unwind from wherever the signal lands, as :class:`Stopped`."""
    raise Stopped(signal.Signals(signum).name)


def exit_status(name: str) -> int:
    """128 + the number of the signal called ``name``, the status a shell gives a process it killed; SIGINT's
    for a name that is no signal (``"peer"``: another process of a distributed run was stopped)."""
    try:
        return 128 + int(signal.Signals[name])
    except KeyError:
        return 128 + int(signal.SIGINT)


def install(handler: Callable[[int, Any], Any]) -> Handlers | None:
    """``handler`` for SIGINT and SIGTERM; the handlers it replaced, for :func:`restore`. ``None`` outside the
    main thread, where Python sets no handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def restore(previous: Handlers | None, *, unless_replaced: Callable[[int, Any], Any] | None = None) -> None:
    """Put back the handlers :func:`install` returned. With ``unless_replaced``, only where that handler is
    still the one set: a handler installed since (e.g. :func:`ignore` by a finished live session) stays."""
    for sig, handler in (previous or {}).items():
        if unless_replaced is None or signal.getsignal(sig) is unless_replaced:
            signal.signal(sig, handler)


def ignore() -> None:
    """Ignore SIGINT and SIGTERM at the OS level, until the process exits or they are set again (loader
    worker processes; a finished session that a late Ctrl-C must not turn into an interrupt: Python resets
    its own handlers to the default while the interpreter shuts down, and the signal would land there)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Unwinding:
    """While the ``with`` block runs (in the main thread): SIGINT and SIGTERM raise :class:`Stopped`, and the
    first one received is kept; on the way out the handlers that were there come back (unless something in
    the block replaced ours).

    A signal can land in code that turns what it interrupted into an error of its own (an ``import`` cut
    short, then retried, reads as "not installed"; numpy's comparison of structured arrays re-raises it as a
    ``TypeError``): :meth:`stopped_by` says that such an exception still counts as the signal.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self._previous: Handlers | None = None
        self._handler = self._stop  # one bound method, so that restore() can recognise it

    def _stop(self, signum: int, frame: Any) -> None:
        self.received.append(signal.Signals(signum).name)
        raise_stopped(signum, frame)

    def __enter__(self) -> "Unwinding":
        self._previous = install(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        restore(self._previous, unless_replaced=self._handler)

    def stopped_by(self, exc: BaseException) -> str | None:
        """The stop signal ``exc`` counts as, or ``None`` for an error of its own: once a signal has arrived,
        any exception is that signal (the first one); without one, a KeyboardInterrupt is the signal it names
        (SIGINT when it names none: Python's own Ctrl-C)."""
        if self.received:
            return self.received[0]
        if isinstance(exc, KeyboardInterrupt):
            return str(exc) if str(exc) in ("SIGINT", "SIGTERM") else "SIGINT"
        return None


class StopRequest:
    """SIGINT / SIGTERM ask the work to stop where it can finish cleanly: the first sets :attr:`requested` to
    its name and calls ``on_request(name)``; the next ones raise :class:`Stopped` (``again_stops_at_once``)
    or are ignored. A context manager (the handlers are restored on exit), or :meth:`install` and
    :meth:`release` where the release has to come at a chosen point of a clean-up."""

    def __init__(self, on_request: Callable[[str], None], *, again_stops_at_once: bool = False) -> None:
        self.requested: str | None = None
        self._on_request = on_request
        self._again_stops_at_once = again_stops_at_once
        self._previous: Handlers | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            self._on_request(name)
        elif self._again_stops_at_once:
            raise Stopped(name)

    def install(self) -> None:
        self._previous = install(self._handle)

    def release(self, *, hold: bool = False) -> None:
        """Put back the handlers that were there; with ``hold``, once a signal was received, :func:`ignore`
        them instead, until the process exits."""
        if hold and self.requested is not None and self._previous is not None:
            ignore()
        else:
            restore(self._previous)
        self._previous = None

    def __enter__(self) -> "StopRequest":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
