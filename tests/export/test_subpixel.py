"""The export-time up-block rewrite computes exactly what upstream's upsample + 3x3 conv computes."""

from __future__ import annotations

import pytest
import torch

from fomm_deploy.export.subpixel import SubpixelUpBlock, with_subpixel_upsampling
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.training.model import build_models
from fomm_deploy.training.model.blocks import UpBlock2d


def _randomise_norms(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (7, 9)])
def test_block_matches_upsample_then_conv(size):
    torch.manual_seed(0)
    block = UpBlock2d(12, 5)
    _randomise_norms(block, 1)
    block.eval()
    x = torch.randn(2, 12, *size)
    with torch.no_grad():
        expected, got = block(x), SubpixelUpBlock(block)(x)
    assert got.shape == expected.shape == (2, 5, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_rejects_other_kernels():
    block = UpBlock2d(4, 4, kernel_size=5, padding=2)
    with pytest.raises(ValueError, match="3x3"):
        SubpixelUpBlock(block)


def test_whole_generator_unchanged_and_original_untouched():
    torch.manual_seed(0)
    models = build_models(resolve_config("tiny-test"))
    _randomise_norms(models.generator, 2)
    generator = models.generator.eval()
    rewritten = with_subpixel_upsampling(generator)
    # The generator's own decoder is rewritten; the dense-motion hourglass keeps upstream's blocks.
    assert all(isinstance(b, SubpixelUpBlock) for b in rewritten.up_blocks)
    assert any(isinstance(m, UpBlock2d) for m in rewritten.dense_motion_network.modules())
    assert all(isinstance(b, UpBlock2d) for b in generator.up_blocks)  # the original is a separate copy
    source = torch.rand(1, 3, 128, 128)
    kp = {"value": torch.rand(1, 10, 2) * 2 - 1, "jacobian": torch.eye(2).repeat(1, 10, 1, 1)}
    with torch.no_grad():
        expected = generator(source, kp_source=kp, kp_driving=kp)["prediction"]
        got = rewritten(source, kp_source=kp, kp_driving=kp)["prediction"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_block_without_conv_bias():
    torch.manual_seed(3)
    block = UpBlock2d(6, 4)
    _randomise_norms(block, 4)
    biased = block.conv
    block.conv = torch.nn.Conv2d(6, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        block.conv.weight.copy_(biased.weight)
    block.eval()
    x = torch.randn(1, 6, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(SubpixelUpBlock(block)(x), block(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(4, 4, 3, padding=1, stride=2),
                                  torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)], ids=["stride", "groups"])
def test_rejects_strided_and_grouped_convs(conv):
    block = UpBlock2d(4, 4)
    block.conv = conv
    with pytest.raises(ValueError, match="3x3"):
        SubpixelUpBlock(block)


def test_rewritten_copy_is_in_eval_mode():
    torch.manual_seed(0)
    generator = build_models(resolve_config("tiny-test")).generator.train()
    rewritten = with_subpixel_upsampling(generator)
    norms = [m for m in rewritten.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)  # running statistics, not the batch's
    assert generator.training  # the caller's module keeps its mode
