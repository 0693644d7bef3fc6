"""``fomm-live`` / ``python runtime/live.py``: webcam puppeteering (issue #5)."""

from __future__ import annotations

import click

try:  # also runnable as a script: python runtime/live.py
    from .cli_common import STUB_SETTINGS, not_available_yet
except ImportError:  # pragma: no cover - script mode
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runtime.cli_common import STUB_SETTINGS, not_available_yet


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Drive a portrait with your face from a webcam, in real time.

    Not available yet: it arrives with live puppeteering (issue #5).
    """
    not_available_yet("fomm-live", 5, "live webcam puppeteering")


if __name__ == "__main__":
    main()
