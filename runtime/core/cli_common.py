"""What every fomm-* command shares: user errors become one line on stderr and a non-zero exit, and
SIGINT / SIGTERM unwind the command like an exception (``signals.Unwinding``), so that nothing half-written
is left behind."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import FommError
from .signals import Unwinding, exit_status


# Every fomm-* command answers -h as well as --help.
CONTEXT = {"help_option_names": ["-h", "--help"]}


def version_option():
    """``--version``: fomm-deploy's version, the same in every command."""
    from fomm_deploy import __version__

    return click.version_option(__version__, "--version", prog_name="fomm-deploy", message="%(prog)s %(version)s")


def quiet_ffmpeg_log() -> None:
    """Keep OpenCV's FFmpeg from printing its own complaints (``moov atom not found``, decoder errors) to
    stderr: the command says what is wrong in its one ``Error:`` line, and a raw FFmpeg line before it only
    confuses. OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, when it opens its first video, so this runs
    before any command's work; -8 is FFmpeg's AV_LOG_QUIET. A value the user set is kept (32 shows FFmpeg's
    messages again)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with one-line errors (``FommError`` -> ``click.ClickException``, no traceback) and with
    SIGINT / SIGTERM unwinding it (:class:`.signals.Unwinding`): the command then exits with 128 + the signal
    number, also when the signal turned into another exception on its way out. OpenCV's FFmpeg log is
    silenced first (``quiet_ffmpeg_log``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with Unwinding() as unwinding:
            quiet_ffmpeg_log()
            try:
                return fn(*args, **kwargs)
            except (Exception, KeyboardInterrupt) as exc:
                name = unwinding.stopped_by(exc)
                if name is not None:  # the clean-ups have run by now, as they do for the signal itself
                    click.echo(f"stopped by {name}; nothing half-written was left behind", err=True)
                    sys.exit(exit_status(name))
                if isinstance(exc, FommError):
                    raise click.ClickException(str(exc)) from None
                raise

    return wrapper
