"""The export-time head rewrite computes what the k x k convolution computes, and stays float at int8."""

from __future__ import annotations

import pytest
import torch

from fomm_deploy.export.narrow_heads import RowSumConv, narrow_head, with_row_sum_heads
from fomm_deploy.runtime.core.config import resolve_config
from fomm_deploy.training.model import build_models


@pytest.mark.parametrize("out_ch, kernel, padding, bias", [(3, 7, 3, True), (1, 7, 3, True), (10, 7, 0, True),
                                                          (4, 5, (2, 1), False), (2, (7, 3), (3, 0), True)])
def test_matches_the_convolution(out_ch, kernel, padding, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, out_ch, kernel, padding=padding, bias=bias)
    x = torch.randn(2, 6, 11, 9)
    with torch.no_grad():
        expected, got = conv(x), RowSumConv(conv)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(4, 3, 7, padding=3, stride=2),
                                  torch.nn.Conv2d(4, 4, 7, padding=3, groups=2),
                                  torch.nn.Conv2d(4, 3, 7, padding=6, dilation=2),
                                  torch.nn.Conv2d(4, 3, 7, padding=3, padding_mode="reflect"),
                                  torch.nn.Conv2d(4, 3, 7, padding="same")],
                         ids=["stride", "groups", "dilation", "reflect", "same"])
def test_rejects_other_convolutions(conv):
    assert not narrow_head(conv)
    with pytest.raises(ValueError, match="stride-1"):
        RowSumConv(conv)


def test_only_narrow_tall_kernels_are_heads():
    assert narrow_head(torch.nn.Conv2d(64, 3, 7, padding=3))
    assert not narrow_head(torch.nn.Conv2d(64, 40, 7, padding=3))  # the jacobian head: no gain measured
    assert not narrow_head(torch.nn.Conv2d(64, 3, 3, padding=1))


def test_whole_models_unchanged_and_originals_untouched():
    torch.manual_seed(0)
    models = build_models(resolve_config("tiny-test"))
    generator, kp_detector = models.generator.eval(), models.kp_detector.eval()
    new_generator, new_kp = with_row_sum_heads(generator), with_row_sum_heads(kp_detector)
    assert isinstance(new_generator.final, RowSumConv) and isinstance(new_kp.kp, torch.nn.Conv2d)
    assert isinstance(new_generator.dense_motion_network.mask, RowSumConv)
    assert isinstance(generator.final, torch.nn.Conv2d)  # the original is a separate copy
    assert generator.first.conv.out_channels <= 16 and isinstance(new_generator.first.conv, torch.nn.Conv2d)
    source = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        kp = kp_detector(source)
        for key, value in new_kp(source).items():
            torch.testing.assert_close(value, kp[key], rtol=0, atol=1e-5)
        expected = generator(source, kp_source=kp, kp_driving=kp)["prediction"]
        got = new_generator(source, kp_source=kp, kp_driving=kp)["prediction"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_traced_heads_are_row_convs_and_int8_keeps_them_float(tmp_path, golden_dir):
    """In the exported generator_frame the final conv is a 1 x 7 conv named .../rows/Conv, and the int8
    quantiser leaves it (and the dense-motion heads) in float."""
    from fomm_deploy.export.quantize import int8_node_names

    from .golden_graph import traced_golden_graph

    model, _ = traced_golden_graph(golden_dir, tmp_path)
    inits = {i.name: i for i in model.graph.initializer}
    row_convs = [n for n in model.graph.node if n.op_type == "Conv" and "/rows/" in n.name]
    assert any("/final/" in n.name for n in row_convs) and any("/mask/" in n.name for n in row_convs)
    for node in row_convs:
        assert list(inits[node.input[1]].dims[2:]) == [1, 7]
    quantised = set(int8_node_names(model))
    assert quantised and not quantised & {n.name for n in row_convs}


def test_the_occlusion_head_is_rewritten_too():
    """tiny-test estimates an occlusion map (1 channel, 7x7): its head is a row-sum conv like final and mask."""
    models = build_models(resolve_config("tiny-test"))
    rewritten = with_row_sum_heads(models.generator)
    assert isinstance(rewritten.dense_motion_network.occlusion, RowSumConv)
