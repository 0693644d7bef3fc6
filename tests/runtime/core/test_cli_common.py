"""cli_common.user_errors: one-line errors, and a stop signal that wins over what it interrupted."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A command that, like a lazy import cut short by a signal, turns the interruption into an error of its own.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import click
    from fomm_deploy.runtime.core.cli_common import user_errors
    from fomm_deploy.runtime.core.errors import BackendUnavailableError

    @click.command()
    @click.option("--signal-first", is_flag=True)
    @click.option("--library-error", is_flag=True)
    @user_errors
    def main(signal_first, library_error):
        if signal_first:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                pass  # swallowed, as an import machinery or a library may do
        if library_error:  # numpy's structured-array comparison turns an exception inside it into a TypeError
            raise TypeError("Cannot compare structured arrays unless they have a common dtype")
        raise BackendUnavailableError("somelib is not installed")

    main()
""")


@pytest.mark.parametrize("signal_first, code, line", [(False, 1, "Error: somelib is not installed"),
                                                      (True, 143, "stopped by SIGTERM")])
def test_an_error_after_a_stop_signal_exits_as_stopped(signal_first, code, line):
    res = subprocess.run([sys.executable, "-c", SCRIPT] + (["--signal-first"] if signal_first else []),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == code and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.splitlines()[0].startswith(line), res.stderr


def test_a_library_error_after_a_stop_signal_exits_as_stopped():
    """A SIGTERM that lands inside numpy's comparison of structured arrays came out as a TypeError with a
    traceback and exit 1 (seen in fomm-animate's interrupted-animation test): after a stop signal, any
    exception exits as stopped. Without a signal, a bug still shows its traceback."""
    res = subprocess.run([sys.executable, "-c", SCRIPT, "--signal-first", "--library-error"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 143 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.splitlines()[0].startswith("stopped by SIGTERM"), res.stderr
    res = subprocess.run([sys.executable, "-c", SCRIPT, "--library-error"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "TypeError: Cannot compare" in res.stderr, res.stderr
