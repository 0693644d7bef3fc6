"""Fixtures for runtime tests: the bundled model exported once per session (the golden export is in
tests/conftest.py, shared with the benchmark tests)."""

from __future__ import annotations

import pytest

from fomm_deploy.export.exporter import run_export
from fomm_deploy.runtime.core.config import resolve_config

@pytest.fixture(scope="session")
def bundled_export(tmp_path_factory):
    """The bundled trained model (checkpoints/synthetic-faces.pth.tar, 64x64) exported at fp32 (about 15 s)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("bundled_export") / "exported"
    run_export(repo / "checkpoints" / "synthetic-faces.pth.tar", resolve_config("synthetic-faces"), out,
               precision="fp32")
    return out
