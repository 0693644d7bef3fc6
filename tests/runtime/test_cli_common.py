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
    from fomm_deploy.runtime.cli_common import user_errors
    from fomm_deploy.runtime.errors import BackendUnavailableError

    @click.command()
    @click.option("--signal-first", is_flag=True)
    @user_errors
    def main(signal_first):
        if signal_first:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                pass  # swallowed, as an import machinery or a library may do
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
