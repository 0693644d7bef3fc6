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


@pytest.mark.parametrize("bad", ["torch:fp16", "tensorrt:int8", "onnxruntime:int4", "cuda:fp32", "torch,torch", ""])
def test_pairs_refuse_what_no_backend_runs(bad):
    with pytest.raises(InputError):
        parse_backend_pairs(bad)


def test_precision_rules():
    check_backend_precision("onnxruntime", "int8")
    check_backend_precision("tensorrt", "fp16")
    with pytest.raises(InputError, match="fp32 reference"):
        check_backend_precision("torch", "fp16")


def test_providers():
    assert parse_providers(" CUDA, cpu ") == ("cuda", "cpu")
    assert parse_providers(None) is None and parse_providers("") is None
    with pytest.raises(InputError):
        parse_providers("gpu")
