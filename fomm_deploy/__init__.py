"""fomm-deploy: the First Order Motion Model from PyTorch training to ONNX Runtime and TensorRT.

One import package. Its sub-packages live in the repository's top-level folders, mapped by
setuptools ``package-dir``:

* ``fomm_deploy.runtime``    = ``runtime/``    (numpy, OpenCV, ONNX Runtime, TensorRT; never torch)
* ``fomm_deploy.export``     = ``export/``     (checkpoint -> verified ONNX graphs and engines)
* ``fomm_deploy.training``   = ``training/``   (the PyTorch model, checkpoints, fomm-train)
* ``fomm_deploy.benchmarks`` = ``benchmarks/`` (fomm-bench)
* ``fomm_deploy.configs``    = ``configs/``    (upstream's YAML configs, packaged as data)

In a built wheel the sub-packages sit inside this folder. In a source checkout that is not installed
(``python runtime/live.py`` from a fresh clone) they are found beside it, through ``__path__`` below.
"""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.2.0"

_here = _Path(__file__).resolve().parent
_checkout = _here.parent
# Only in a source checkout: the sub-package folders are siblings of this one, next to pyproject.toml.
if not (_here / "runtime").is_dir() and (_checkout / "pyproject.toml").is_file() \
        and (_checkout / "runtime" / "core" / "contract.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - __path__ is defined for packages
