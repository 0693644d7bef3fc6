"""The shared name tables: one set of backend/precision/provider names for every command."""

from __future__ import annotations

import pytest

from fomm_deploy.runtime.errors import InputError
from fomm_deploy.runtime.graphs import BACKEND_CLASSES
from fomm_deploy.runtime.names import (BACKEND_PRECISIONS, check_backend_precision, parse_backend_pairs,
                                       parse_providers)


def test_every_backend_name_has_a_class():
    assert set(BACKEND_CLASSES) == set(BACKEND_PRECISIONS)


def test_pairs_accept_what_the_benchmark_measures():
    assert parse_backend_pairs("onnxruntime:int8, onnxruntime:fp16,torch") == [
        ("onnxruntime", "int8"), ("onnxruntime", "fp16"), ("torch", "fp32")]


@pytest.mark.parametrize("bad", ["torch:int8", "tensorrt:int8", "onnxruntime:int4", "cuda:fp32", "torch,torch", ""])
def test_pairs_refuse_what_no_backend_runs(bad):
    with pytest.raises(InputError):
        parse_backend_pairs(bad)


def test_precision_rules():
    check_backend_precision("onnxruntime", "int8")
    check_backend_precision("tensorrt", "fp16")
    with pytest.raises(InputError, match="fp32 reference"):
        check_backend_precision("torch", "int8")


def test_device_rules():
    """torch fp16 runs on CUDA only (the fp16 graphs' policy in half precision); --device is torch's option."""
    from fomm_deploy.runtime.names import check_backend_device

    assert check_backend_device("torch", "fp32", None) == "cpu"
    assert check_backend_device("torch", "fp16", "cuda:1") == "cuda:1"
    assert check_backend_device("tensorrt", "fp16", None) == "cuda"
    assert check_backend_device("onnxruntime", "int8", None) == "cpu"
    with pytest.raises(InputError, match="CUDA GPU only.*--device cuda"):
        check_backend_device("torch", "fp16", None)
    with pytest.raises(InputError, match="CUDA GPU only"):
        check_backend_device("torch", "fp16", "cpu")
    with pytest.raises(InputError, match="--providers"):
        check_backend_device("onnxruntime", "fp32", "cuda")
    with pytest.raises(InputError, match="unknown device"):
        check_backend_device("torch", "fp32", "tpu")


def test_providers():
    assert parse_providers(" CUDA, cpu ") == ("cuda", "cpu")
    assert parse_providers(None) is None and parse_providers("") is None
    with pytest.raises(InputError):
        parse_providers("gpu")
