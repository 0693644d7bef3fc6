"""Building blocks shared by the keypoint detector, dense-motion network and generator.

Attribute names (``conv``, ``norm``, ``pool``, ``down_blocks``, ``up_blocks``, ...) follow upstream
first-order-model so that its checkpoints load with ``strict=True``. Norms are plain
``nn.BatchNorm2d``; training converts them to SyncBatchNorm when it runs distributed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(h: int, w: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Grid of (x, y) coordinates in [-1, 1]; corners are exactly -1 and +1.

    Returns:
        float (h, w, 2); ``[..., 0]`` is x (varies along the width), ``[..., 1]`` is y.
    """
    # Same operation order as upstream (divide, times 2, minus 1) so results are bit-identical.
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    xx = x.view(1, -1).expand(h, w)
    yy = y.view(-1, 1).expand(h, w)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(kp_value: torch.Tensor, spatial_size: tuple[int, int], kp_variance: float) -> torch.Tensor:
    """Gaussian blob per keypoint: exp(-0.5 |z - kp|^2 / variance).

    Args:
        kp_value: float (B, K, 2), (x, y) in [-1, 1].
    Returns:
        float (B, K, h, w).
    """
    h, w = spatial_size
    grid = make_coordinate_grid(h, w, kp_value.dtype, kp_value.device).view(1, 1, h, w, 2)
    mean = kp_value.view(*kp_value.shape[:2], 1, 1, 2)
    diff = grid - mean  # (B, K, h, w, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of 2x2 matrices (adjugate over determinant).

    Used instead of ``torch.inverse``, which has no ONNX or TensorRT equivalent and no fp16 kernel.

    Args:
        m: float (..., 2, 2), invertible.
    Returns:
        float (..., 2, 2).
    """
    a, b = m[..., 0, 0], m[..., 0, 1]
    c, d = m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    row0 = torch.stack([d, -b], dim=-1)
    row1 = torch.stack([-c, a], dim=-1)
    return torch.stack([row0, row1], dim=-2) / det[..., None, None]


class AntiAliasInterpolation2d(nn.Module):
    """Band-limited downsampling: Gaussian blur (sigma = (1/scale - 1)/2), then keep every (1/scale)-th pixel.

    ``weight`` is a persistent buffer because upstream checkpoints store the kernel.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        t = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2
        g = torch.exp(-((t - mean) ** 2) / (2 * sigma**2))
        kernel = g.view(-1, 1) * g.view(1, -1)
        kernel = kernel / torch.sum(kernel)
        kernel = kernel.view(1, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", kernel)
        self.groups = channels
        self.scale = scale
        self.step = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        # Upstream blurs at full resolution and then keeps every step-th pixel; a convolution with that
        # stride computes exactly the kept pixels (the same sums), step**2 times fewer of them. The
        # full-resolution blur was a visible share of the keypoint detector's time (benchmarks/RESULTS.md).
        return F.conv2d(out, weight=self.weight, groups=self.groups, stride=self.step)


class DownBlock2d(nn.Module):
    """conv 3x3 -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """Nearest x2 upsample -> conv 3x3 -> BN -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2.0)
        return F.relu(self.norm(self.conv(out)))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU at constant resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv -> BN -> ReLU -> conv, plus the input."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class Encoder(nn.Module):
    """Hourglass encoder; returns every intermediate, input first: [x, d0, d1, ...]."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            c_in = in_features if i == 0 else min(max_features, block_expansion * (2**i))
            c_out = min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(DownBlock2d(c_in, c_out))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: upsample, then concatenate the matching encoder output (skip) on channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            c_in = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            c_out = min(max_features, block_expansion * (2**i))
            blocks.append(UpBlock2d(c_in, c_out))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        skips = list(x)
        out = skips.pop()
        for block in self.up_blocks:
            out = block(out)
            out = torch.cat([out, skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style hourglass; output has ``out_filters = block_expansion + in_features`` channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
