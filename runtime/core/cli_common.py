"""What every fomm-* command shares: user errors become one line on stderr and a non-zero exit, and
SIGINT / SIGTERM unwind the command like an exception, so that nothing half-written is left behind."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from .errors import FommError


# Every fomm-* command answers -h as well as --help.
CONTEXT = {"help_option_names": ["-h", "--help"]}


def version_option():
    """``--version``: fomm-deploy's version, the same in every command."""
    from fomm_deploy import __version__

    return click.version_option(__version__, "--version", prog_name="fomm-deploy", message="%(prog)s %(version)s")


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``str()`` is the signal's name. A KeyboardInterrupt, so ``with`` blocks
    (video writers, staging folders) run their clean-up on the way out."""


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def quiet_ffmpeg_log() -> None:
    """Keep OpenCV's FFmpeg from printing its own complaints (``moov atom not found``, decoder errors) to
    stderr: the command says what is wrong in its one ``Error:`` line, and a raw FFmpeg line before it only
    confuses. OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, when it opens its first video, so this runs
    before any command's work; -8 is FFmpeg's AV_LOG_QUIET. A value the user set is kept (32 shows FFmpeg's
    messages again)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with one-line errors (``FommError`` -> ``click.ClickException``, no traceback) and with
    SIGTERM treated like Ctrl-C: both unwind the command and exit with 128 + the signal number. OpenCV's
    FFmpeg log is silenced first (``quiet_ffmpeg_log``).

    A signal can land in code that turns what it interrupted into an error of its own (an ``import`` cut
    short, then retried, reads as "not installed"; numpy's comparison of structured arrays re-raises it as a
    ``TypeError``): once a stop signal has arrived, any exception that follows still exits as stopped by that
    signal. The unwinding has run every clean-up by then, as it does for the signal itself.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = None
        received: list[str] = []

        def stop(signum, frame) -> None:
            received.append(signal.Signals(signum).name)
            _raise_stopped(signum, frame)

        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

        def stopped(name: str) -> None:
            click.echo(f"stopped by {name}; nothing half-written was left behind", err=True)
            sys.exit(128 + int(signal.Signals[name]))

        quiet_ffmpeg_log()
        try:
            return fn(*args, **kwargs)
        except FommError as exc:
            if received:
                stopped(received[0])
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            stopped(received[0] if received else str(exc) if str(exc) in ("SIGINT", "SIGTERM") else "SIGINT")
        except Exception:
            if received:
                stopped(received[0])
            raise
        finally:
            for sig, handler in (previous or {}).items():
                if signal.getsignal(sig) is stop:  # a command that chose to ignore late signals keeps that
                    signal.signal(sig, handler)

    return wrapper
