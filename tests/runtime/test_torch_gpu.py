"""The torch backend as a GPU backend: the fp16 policy of the fp16 graphs (which blocks are half), the device
rules, and on a CUDA machine (marked gpu) fp16 + channels-last + CUDA-graph replay against fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_deploy.export.inputs import sample_feeds
from fomm_deploy.runtime.backends.torch_ref import TorchBackend, apply_fp16_policy, fp16_blocks, module_scope_path
from fomm_deploy.runtime.core.compare import compare
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.precision import FP16_BUDGET
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.training.checkpoint import load_checkpoint
from fomm_deploy.training.model.wrappers import flat_module

GRAPHS = ("kp_detector", "generator", "source_encoder", "generator_frame")


@pytest.fixture(scope="module")
def tiny(golden_dir):
    cfg = resolve_config("tiny-test")
    ckpt = golden_dir / "checkpoint.pth.tar"
    return cfg, ckpt, sample_feeds(load_checkpoint(ckpt, cfg).models, cfg, 2, 0)


def _module(cfg, ckpt, graph):
    return flat_module(graph, load_checkpoint(ckpt, cfg).models, cfg.estimate_jacobian).eval()


def test_scope_paths_use_the_onnx_node_name_form():
    assert module_scope_path("generator.up_blocks.0.conv") == "/generator/up_blocks.0/conv/"
    assert module_scope_path("") == "/"


def test_fp16_blocks_follow_the_export_policy(tiny):
    cfg, ckpt, _ = tiny
    assert fp16_blocks(_module(cfg, ckpt, "kp_detector"), "kp_detector") == []  # FP32_AT_FP16
    names = fp16_blocks(_module(cfg, ckpt, "generator_frame"), "generator_frame")
    assert {"generator.bottleneck", "generator.final", "generator.first", "generator.up_blocks.0",
            "generator.dense_motion_network.hourglass", "generator.dense_motion_network.mask"} <= set(names)
    # the sensitive parts stay fp32: the anti-alias downsampling, and nothing is nested twice
    assert not any(n.endswith(".down") for n in names)
    assert len(names) == len(set(names)) and not any(a != b and b.startswith(a + ".") for a in names for b in names)


def test_fp16_policy_converts_only_those_blocks_and_keeps_float32_io(tiny):
    cfg, ckpt, feeds = tiny
    spec = graph_specs(cfg)["generator"]
    module = _module(cfg, ckpt, "generator")
    args = [torch.from_numpy(feeds["generator"][n]) for n in spec.input_names]
    with torch.no_grad():
        ref = module(*args).numpy()
    half = apply_fp16_policy(module, "generator")
    assert apply_fp16_policy(module, "generator") == half  # idempotent: no second set of hooks
    for name, p in module.named_parameters():
        inside = any(name.startswith(h.removeprefix("generator.") + ".") or name.startswith(h + ".") for h in half)
        assert p.dtype == (torch.float16 if inside else torch.float32), name
    with torch.no_grad():  # CPU half convolutions exist in torch 2.13: the policy runs end to end here
        out = module(*args)
    assert out.dtype == torch.float32
    result = compare("generator torch fp16 policy (CPU half)", {"prediction": out.numpy()}, {"prediction": ref},
                     precision="fp16")
    assert not result.budget_failures(FP16_BUDGET), result.failures
    assert result.psnr_db < 120  # really computed in half


def test_fp16_needs_cuda(tiny, golden_export):
    cfg, ckpt, _ = tiny
    spec = graph_specs(cfg)["generator"]
    with pytest.raises(InputError, match="CUDA GPU only"):
        TorchBackend(spec, ckpt, cfg, precision="fp16")
    with pytest.raises(InputError, match="CUDA device"):
        TorchBackend(spec, ckpt, cfg, cuda_graph=True)
    from fomm_deploy.runtime.graphs import load_exported, make_backend

    exported = load_exported(golden_export)
    with pytest.raises(InputError, match="--device cuda"):
        make_backend("torch", exported, "generator", "fp16", ckpt=ckpt)
    backend = make_backend("torch", exported, "generator", "fp32", ckpt=ckpt, device="cpu")
    assert backend.device == "cpu" and not backend.cuda_graph and not backend.channels_last


def test_cli_refuses_torch_fp16_on_cpu_in_one_line(golden_export, tmp_path):
    from click.testing import CliRunner

    from fomm_deploy.runtime.cli import compare_main

    result = CliRunner().invoke(compare_main, ["--onnx", str(golden_export), "--backends", "onnxruntime,torch",
                                               "--precision", "fp16"])
    assert result.exit_code != 0 and "CUDA GPU only" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(compare_main, ["--onnx", str(golden_export), "--device", "tpu"])
    assert result.exit_code != 0 and "unknown device" in result.output


@pytest.mark.gpu
@pytest.mark.parametrize("graph", GRAPHS)
def test_cuda_fp16_with_cuda_graphs_against_fp32(tiny, graph):
    cfg, ckpt, feeds = tiny
    spec = graph_specs(cfg)[graph]
    ref = TorchBackend(spec, ckpt, cfg).activate().infer(feeds[graph])
    gpu = TorchBackend(spec, ckpt, cfg, device="cuda", precision="fp16", compile=False).activate()
    assert gpu.cuda_graph and gpu.channels_last  # the backend's own CUDA graph: on by default without compile
    first = {k: v.copy() for k, v in gpu.infer(feeds[graph]).items()}
    again = gpu.infer(feeds[graph])  # replay of the captured graph
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    result = compare(f"{graph} torch cuda fp16", first, ref, precision="fp16", frame_size=cfg.frame_size)
    assert not result.budget_failures(FP16_BUDGET), result.failures
    one = gpu.infer({k: v[:1] for k, v in feeds[graph].items()})  # another batch: another capture
    for k in one:
        np.testing.assert_allclose(one[k], first[k][:1], atol=1e-2)
