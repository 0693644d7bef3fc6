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


@pytest.mark.parametrize("bad, why", [
    ("torch:fp16", r"'torch:fp16': torch cannot run fp16: the torch backend is the fp32 reference"),
    ("tensorrt:int8", r"'tensorrt:int8': tensorrt cannot run int8: the int8 graphs are for ONNX Runtime on CPU"),
    ("onnxruntime:int4", r"'onnxruntime:int4': unknown precision 'int4'"),
    ("cuda:fp32", r"'cuda:fp32': unknown backend 'cuda'"),
    ("torch,torch", r"names 'torch' twice"),
    ("", r"--backends is empty"),
    (" , ", r"--backends is empty"),
])
def test_pairs_refuse_what_no_backend_runs(bad, why):
    with pytest.raises(InputError, match=why):
        parse_backend_pairs(bad)


def test_precision_rules():
    check_backend_precision("onnxruntime", "int8")
    check_backend_precision("tensorrt", "fp16")
    with pytest.raises(InputError, match="fp32 reference"):
        check_backend_precision("torch", "fp16")


def test_providers():
    assert parse_providers(" CUDA, cpu ") == ("cuda", "cpu")
    assert parse_providers(None) is None and parse_providers("") is None
    assert parse_providers(["tensorrt", " Cuda", "", "cpu"]) == ("tensorrt", "cuda", "cpu")
    assert parse_providers([]) is None
    with pytest.raises(InputError, match="unknown ONNX Runtime provider 'gpu'; choose from cpu, cuda, tensorrt"):
        parse_providers("cpu,gpu")


def test_local_file_refuses_urls():
    import click

    from fomm_deploy.runtime.names import local_file

    assert str(local_file(None, None, "clips/a.mp4")) == "clips/a.mp4"
    assert local_file(None, None, None) is None
    with pytest.raises(click.BadParameter, match="URLs are not supported"):
        local_file(None, None, "https://example.com/a.mp4")


def test_require_tensorrt_names_what_is_missing(monkeypatch):
    from fomm_deploy.runtime import names
    from fomm_deploy.runtime.errors import BackendUnavailableError

    monkeypatch.setattr(names, "tensorrt_missing", lambda: ["A", "B"])
    with pytest.raises(BackendUnavailableError, match="needs A and B; or use --backend onnxruntime"):
        names.require_tensorrt()
    monkeypatch.setattr(names, "tensorrt_missing", lambda: [])
    names.require_tensorrt()
