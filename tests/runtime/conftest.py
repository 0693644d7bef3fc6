"""Fixtures for runtime tests: the golden checkpoint exported once per session."""

from __future__ import annotations

import pytest

from fomm_deploy.export.exporter import run_export
from fomm_deploy.runtime.config import resolve_config


@pytest.fixture(scope="session")
def golden_export(tmp_path_factory, golden_dir):
    out = tmp_path_factory.mktemp("runtime_export") / "exported"
    run_export(golden_dir / "checkpoint.pth.tar", resolve_config("tiny-test"), out, precision="all")
    return out
