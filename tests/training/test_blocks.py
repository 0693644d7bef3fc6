"""Numeric building blocks: coordinate grid, anti-alias downsampling, closed-form 2x2 inverse."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fomm_deploy.runtime.core.keypoints import inverse_2x2 as inverse_2x2_np
from fomm_deploy.training.model import AntiAliasInterpolation2d, inverse_2x2, kp2gaussian, make_coordinate_grid

REPO = Path(__file__).resolve().parents[2]


def test_coordinate_grid_is_bit_exact_and_xy_ordered():
    grid = make_coordinate_grid(3, 4)
    assert grid.shape == (3, 4, 2)
    # FACTS 2.1: w=4 in float32 gives exactly these values (divide, times 2, minus 1).
    expected_x = np.array([-1, -0.33333331, 0.33333337, 1], dtype=np.float32)
    np.testing.assert_array_equal(grid[0, :, 0].numpy(), expected_x)
    np.testing.assert_array_equal(grid[:, 0, 1].numpy(), np.array([-1, 0, 1], dtype=np.float32))


@pytest.mark.parametrize("scale, kernel, step", [(0.25, 13, 4), (0.5, 5, 2), (0.125, 29, 8)])
def test_anti_alias_kernel(scale, kernel, step):
    down = AntiAliasInterpolation2d(3, scale)
    assert down.weight.shape == (3, 1, kernel, kernel)
    assert down.step == step
    np.testing.assert_allclose(down.weight.sum(dim=(1, 2, 3)).numpy(), 1.0, rtol=1e-6)


def test_anti_alias_output_size_is_ceil_for_non_divisible_input():
    down = AntiAliasInterpolation2d(3, 0.25)
    assert down(torch.rand(1, 3, 250, 250)).shape == (1, 3, 63, 63)
    assert down(torch.rand(1, 3, 256, 256)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_2x2_matches_torch_inverse(dtype):
    g = torch.Generator().manual_seed(0)
    m = torch.eye(2, dtype=dtype) + 0.4 * torch.randn(64, 10, 2, 2, generator=g, dtype=dtype)
    ours = inverse_2x2(m)
    ref = torch.inverse(m)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    cond = torch.linalg.cond(m).max().item()
    torch.testing.assert_close(ours, ref, atol=tol * cond, rtol=tol * cond)
    torch.testing.assert_close(ours @ m, torch.eye(2, dtype=dtype).expand_as(m), atol=tol * cond, rtol=0)
    np.testing.assert_allclose(inverse_2x2_np(m.numpy()), ref.numpy(), atol=tol * cond, rtol=tol * cond)


def test_no_general_matrix_inverse_in_product_code():
    pattern = re.compile(r"torch\.inverse\(|linalg\.inv(_ex)?\(|\.inverse\(\)")
    offenders = []
    for package in ("training", "export", "runtime", "benchmarks"):
        for path in (REPO / package).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "general matrix inverse found (use inverse_2x2):\n" + "\n".join(offenders)


def test_kp_detector_jacobian_starts_at_identity():
    from fomm_deploy.runtime.core.config import resolve_config
    from fomm_deploy.training.model import build_kp_detector

    kp = build_kp_detector(resolve_config("tiny-test")).eval()
    with torch.no_grad():
        out = kp(torch.rand(2, 3, 128, 128))
    torch.testing.assert_close(out["jacobian"], torch.eye(2).expand(2, 10, 2, 2))
    assert out["value"].shape == (2, 10, 2) and out["value"].abs().max() <= 1


def _gaussian_kernel(scale: float) -> np.ndarray:
    """Upstream's kernel written out: sigma = (1/scale - 1) / 2, size 2 * round(4 sigma) + 1, normalised."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-t**2 / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_anti_alias_kernel_is_the_gaussian(scale):
    down = AntiAliasInterpolation2d(2, scale)
    for channel in range(2):
        np.testing.assert_allclose(down.weight[channel, 0].numpy(), _gaussian_kernel(scale), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scale, size", [(0.5, 9), (0.25, 10)])
def test_anti_alias_is_blur_then_every_step_th_pixel_from_the_first(scale, size):
    x = torch.rand(1, 2, size, size, generator=torch.Generator().manual_seed(0))
    k = _gaussian_kernel(scale)
    half, step = len(k) // 2, int(1 / scale)
    padded = np.pad(x.numpy().astype(np.float64), ((0, 0), (0, 0), (half, half), (half, half)))
    rows = range(0, size, step)
    expected = np.array([[[np.sum(k * padded[0, c, i:i + len(k), j:j + len(k)]) for j in rows] for i in rows]
                         for c in range(2)])[None]
    np.testing.assert_allclose(AntiAliasInterpolation2d(2, scale)(x).numpy(), expected, atol=1e-5)


def test_anti_alias_at_scale_one_is_the_identity():
    x = torch.rand(1, 3, 7, 7)
    assert AntiAliasInterpolation2d(3, 1.0)(x) is x


def test_kp2gaussian_values_and_xy_order():
    kp = torch.tensor([[[0.5, 0.0]]])  # x = 0.5: column 3 of 5; y = 0: row 2
    heat = kp2gaussian(kp, (5, 5), kp_variance=0.01)
    assert heat.shape == (1, 1, 5, 5)
    assert heat[0, 0].argmax().item() == 2 * 5 + 3 and heat[0, 0, 2, 3].item() == pytest.approx(1.0)
    # grid step 0.5: one pixel away is distance 0.5, exp(-0.5 * 0.25 / 0.01)
    assert heat[0, 0, 2, 2].item() == pytest.approx(np.exp(-0.5 * 0.25 / 0.01), rel=1e-5)
    assert heat[0, 0, 1, 2].item() == pytest.approx(np.exp(-0.5 * 0.5 / 0.01), rel=1e-4)
