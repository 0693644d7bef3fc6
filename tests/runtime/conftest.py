"""Fixtures for runtime tests: the golden checkpoint exported once per session."""

from __future__ import annotations

import pytest

from fomm_deploy.export.exporter import run_export
from fomm_deploy.runtime.config import resolve_config
from fomm_deploy.runtime.contract import INT8_BUDGET, Budget

# The golden checkpoint has random weights: its int8 graphs (27.4 dB against fp32) are below INT8_BUDGET,
# which an export of it with the default budget rejects (tests/export). The runtime tests need the int8
# files for their structure only, so the export passes a floor on purpose (tests/export uses it too).
RANDOM_WEIGHTS_INT8 = {"int8": Budget(kp_max_px=INT8_BUDGET.kp_max_px, prediction_min_psnr_db=20.0)}


@pytest.fixture(scope="session")
def golden_export(tmp_path_factory, golden_dir):
    out = tmp_path_factory.mktemp("runtime_export") / "exported"
    run_export(golden_dir / "checkpoint.pth.tar", resolve_config("tiny-test"), out, precision="all",
               budgets=RANDOM_WEIGHTS_INT8)
    return out


@pytest.fixture(scope="session")
def bundled_export(tmp_path_factory):
    """The bundled trained model (checkpoints/synthetic-faces.pth.tar, 64x64) exported at fp32 (about 15 s)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("bundled_export") / "exported"
    run_export(repo / "checkpoints" / "synthetic-faces.pth.tar", resolve_config("synthetic-faces"), out,
               precision="fp32")
    return out
