"""``fomm-export``: checkpoint -> verified ONNX graphs (issue #3)."""

from __future__ import annotations

import click

from runtime.cli_common import STUB_SETTINGS, not_available_yet


@click.command(context_settings=STUB_SETTINGS)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Export an FOMM checkpoint to ONNX graphs for ONNX Runtime and TensorRT.

    Not available yet: it arrives with the export (issue #3). Today, `python -m training.inspect`
    loads and checks a checkpoint.
    """
    not_available_yet("fomm-export", 3, "the ONNX export")
