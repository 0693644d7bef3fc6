"""Every declared console script is installed and answers --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = ["fomm-export", "fomm-animate", "fomm-compare", "fomm-live", "fomm-train", "fomm-bench"]


def _script(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name} is not installed; run the README set-up (make setup)")
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    res = subprocess.run([_script(name), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout


def test_live_runs_as_a_script():
    live = Path(__file__).resolve().parents[1] / "runtime" / "live.py"
    res = subprocess.run([sys.executable, str(live), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "webcam" in res.stdout, res.stderr
