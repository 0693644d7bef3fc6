"""``fomm-animate`` and ``fomm-compare`` (torch-free command line of the runtime)."""

from __future__ import annotations

import click

from .cli_common import STUB_SETTINGS, not_available_yet


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def animate_main(ctx: click.Context) -> None:
    """Animate a still image with a driving video through the exported graphs (ONNX Runtime or TensorRT).

    Not available yet: it arrives with the runtime (issue #4).
    """
    not_available_yet("fomm-animate", 4, "the runtime (animator, backends)")


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def compare_main(ctx: click.Context) -> None:
    """Run the same inputs through two backends and report per-output errors against the tolerance table.

    Not available yet: it arrives with the runtime (issue #4).
    """
    not_available_yet("fomm-compare", 4, "the runtime (backends and comparator)")
