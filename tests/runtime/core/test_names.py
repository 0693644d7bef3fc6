"""The shared name tables: one set of backend/precision/provider names for every command."""

from __future__ import annotations

import pytest

from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.runtime.graphs import BACKEND_CLASSES
from fomm_deploy.runtime.core.names import (BACKEND_PRECISIONS, check_backend_device, check_backend_precision,
                                            parse_backend_pairs, parse_device, parse_providers)


def test_every_backend_name_has_a_class():
    assert set(BACKEND_CLASSES) == set(BACKEND_PRECISIONS)


def test_pairs_accept_what_the_benchmark_measures():
    assert parse_backend_pairs("onnxruntime:int8, onnxruntime:fp16,torch") == [
        ("onnxruntime", "int8"), ("onnxruntime", "fp16"), ("torch", "fp32")]


def test_pairs_take_the_omitted_precisions_by_place():
    """fomm-compare's reading of the same grammar: the reference fp32, the second item --precision unless named."""
    assert parse_backend_pairs("onnxruntime,tensorrt", omitted=("fp32", "fp16")) == [
        ("onnxruntime", "fp32"), ("tensorrt", "fp16")]
    assert parse_backend_pairs("onnxruntime,tensorrt:fp32", omitted=("fp32", "fp16")) == [
        ("onnxruntime", "fp32"), ("tensorrt", "fp32")]
    assert parse_backend_pairs("torch,onnxruntime,onnxruntime", omitted=("fp32", "int8")) == [
        ("torch", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "fp32")]
    with pytest.raises(InputError, match="'tensorrt': tensorrt cannot run int8"):
        parse_backend_pairs("onnxruntime,tensorrt", omitted=("fp32", "int8"))


@pytest.mark.parametrize("bad, why", [
    ("torch:int8", r"'torch:int8': torch cannot run int8"),
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
    with pytest.raises(InputError, match=r"runs fp32 \(the reference\), or fp16 with --device cuda"):
        check_backend_precision("torch", "int8")


def test_device_rules():
    """torch fp16 runs on CUDA only (the fp16 graphs' policy in half precision); --device is torch's option."""
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


@pytest.mark.parametrize("given, device", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"),
                                           (" CUDA:0 ", "cuda:0"), ("Cpu", "cpu"), (None, None)])
def test_the_device_parser_reads_three_forms(given, device):
    assert parse_device(given) == device


@pytest.mark.parametrize("bad", ["cpu:0", "cuda:", "cuda:x", "cuda:-1", "cuda:\u00b2", "mps", "vulkan", "tpu:0", "",
                                 ":0"])
def test_the_device_parser_refuses_everything_else_in_one_message(bad):
    with pytest.raises(InputError) as info:
        parse_device(bad)
    assert str(info.value) == f"unknown device '{bad.strip()}'; use cpu, cuda or cuda:N"
    with pytest.raises(InputError, match="^unknown device .*; use cpu, cuda or cuda:N$"):  # the backends' check too
        check_backend_device("torch", "fp32", bad)


def test_providers():
    assert parse_providers(" CUDA, cpu ") == ("cuda", "cpu")
    assert parse_providers(None) is None and parse_providers("") is None
    assert parse_providers(["tensorrt", " Cuda", "", "cpu"]) == ("tensorrt", "cuda", "cpu")
    assert parse_providers([]) is None
    with pytest.raises(InputError, match="unknown ONNX Runtime provider 'gpu'; choose from cpu, cuda, tensorrt"):
        parse_providers("cpu,gpu")


def test_the_tables_are_data_and_checks_without_click():
    """names.py is what the commands accept; the click options that read it live in options.py."""
    import subprocess
    import sys

    code = ("import sys; import fomm_deploy.runtime.core.names; "
            "print(sorted(m for m in ('click', 'torch', 'onnxruntime') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
