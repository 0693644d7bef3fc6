"""The runtime deploys without torch: importing every runtime module must not load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
import fomm_deploy.runtime
names = ["fomm_deploy.runtime"] + [m.name for m in pkgutil.walk_packages(fomm_deploy.runtime.__path__, "fomm_deploy.runtime.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(len(names), "modules")
if loaded:
    sys.exit("torch was imported: " + ", ".join(loaded[:5]))
"""


def test_runtime_imports_no_torch():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    assert int(res.stdout.split()[0]) >= 6  # it really walked the package


def test_the_check_can_fail():
    # Guard against a vacuous test: the same script reports a module that does import torch.
    res = subprocess.run([sys.executable, "-c", SCRIPT.replace('"fomm_deploy.runtime"]', '"fomm_deploy.runtime", "fomm_deploy.training.model"]', 1)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "torch was imported" in res.stderr
