"""``fomm-bench``: latency benchmarks against the upstream-style eager baseline (issue #7)."""

from __future__ import annotations

import click

from runtime.cli_common import STUB_SETTINGS, not_available_yet


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Measure per-stage and end-to-end latency of every available backend.

    Not available yet: it arrives with the performance work (issue #7).
    """
    not_available_yet("fomm-bench", 7, "the benchmark suite")
