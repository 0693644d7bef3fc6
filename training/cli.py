"""``fomm-train``: upstream-compatible training (issue #6)."""

from __future__ import annotations

import click

from runtime.cli_common import STUB_SETTINGS, not_available_yet


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train FOMM on a video dataset and write upstream-format checkpoints.

    Not available yet: it arrives with training (issue #6).
    """
    not_available_yet("fomm-train", 6, "training")
