"""torch.compile on the torch backend: every graph compiles as one graph (no graph break), and the compiled
frame_step gives the eager frames; its kernels go to the user's cache folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_deploy.export.inputs import sample_feeds
from fomm_deploy.runtime.backends.torch_ref import TorchBackend
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.runtime.core.contract import graph_specs
from fomm_deploy.runtime.core.errors import InputError
from fomm_deploy.training.checkpoint import load_checkpoint
from fomm_deploy.training.model.wrappers import flat_module


@pytest.fixture(scope="module")
def tiny(golden_dir):
    cfg = resolve_config("tiny-test")
    ckpt = golden_dir / "checkpoint.pth.tar"
    models = load_checkpoint(ckpt, cfg).models
    return cfg, ckpt, models, sample_feeds(models, cfg, 2, 1)


@pytest.mark.parametrize("graph", ["kp_detector", "source_encoder", "generator_frame", "frame_step", "generator"])
def test_every_graph_compiles_without_a_graph_break(tiny, graph):
    cfg, _, models, feeds = tiny
    spec = graph_specs(cfg)[graph]
    module = flat_module(graph, models, cfg.estimate_jacobian)
    explained = torch._dynamo.explain(module)(*[torch.from_numpy(feeds[graph][n]) for n in spec.input_names])
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_compile_defaults_and_modes(tiny):
    cfg, ckpt, _, _ = tiny
    spec = graph_specs(cfg)["frame_step"]
    assert TorchBackend(spec, ckpt, cfg).compile is False  # the CPU: eager unless asked
    assert TorchBackend(spec, ckpt, cfg, compile=True).compile_mode == "default"
    with pytest.raises(InputError, match="torch.compile mode"):
        TorchBackend(spec, ckpt, cfg, compile=True, compile_mode="fastest")


def test_own_cuda_graph_is_refused_with_reduce_overhead(tiny):
    """reduce-overhead captures CUDA graphs itself: the backend's own replay with it is refused, before any CUDA
    work (no GPU needed); compile off or another mode keeps it, and the CUDA default leaves it to torch.compile."""
    cfg, ckpt, _, _ = tiny
    spec = graph_specs(cfg)["frame_step"]
    for options in ({}, {"compile": True}, {"compile_mode": "reduce-overhead"}):
        with pytest.raises(InputError, match="reduce-overhead mode both capture CUDA graphs"):
            TorchBackend(spec, ckpt, cfg, device="cuda", cuda_graph=True, **options)
    assert TorchBackend(spec, ckpt, cfg, device="cuda", cuda_graph=True, compile=False).cuda_graph
    assert TorchBackend(spec, ckpt, cfg, device="cuda", cuda_graph=True,
                        compile_mode="max-autotune-no-cudagraphs").cuda_graph
    default = TorchBackend(spec, ckpt, cfg, device="cuda")
    assert default.compile and default.compile_mode == "reduce-overhead" and not default.cuda_graph


def test_kernel_cache_is_the_user_cache_unless_the_variable_is_set(tiny, tmp_path, monkeypatch):
    """activate() points Inductor at the user's cache unless TORCHINDUCTOR_CACHE_DIR is set, which torch itself
    sets once Inductor ran in the process; kernel_cache says which (nothing compiles here)."""
    cfg, ckpt, _, _ = tiny
    spec = graph_specs(cfg)["kp_detector"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    ours = TorchBackend(spec, ckpt, cfg, compile=True).activate()
    assert ours.kernel_cache == str(tmp_path / "cache" / "fomm-deploy" / "torch-compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torchinductor"))
    assert TorchBackend(spec, ckpt, cfg, compile=True).activate().kernel_cache == str(tmp_path / "torchinductor")
    assert TorchBackend(spec, ckpt, cfg).activate().kernel_cache is None  # eager: nothing compiles


@pytest.mark.slow  # Inductor compiles C++ kernels for the CPU: about 1-2 minutes on 2 cores
def test_compiled_frame_step_equals_eager_and_caches_its_kernels(tiny, tmp_path, monkeypatch):
    cfg, ckpt, _, feeds = tiny
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    spec = graph_specs(cfg)["frame_step"]
    lines = []
    compiled = TorchBackend(spec, ckpt, cfg, compile=True, on_compile=lines.append).activate()
    ours = compiled.infer(feeds["frame_step"])["frame"].copy()
    eager = TorchBackend(spec, ckpt, cfg).activate().infer(feeds["frame_step"])["frame"]
    assert np.abs(ours.astype(int) - eager).max() <= 1
    assert lines[0].startswith("torch:frame_step: compiling for batch 2") and "compiled in" in lines[1]
    assert lines[0].endswith(f"kernels cached in {tmp_path / 'cache' / 'fomm-deploy' / 'torch-compile'})")
    assert any((tmp_path / "cache" / "fomm-deploy" / "torch-compile").iterdir())
