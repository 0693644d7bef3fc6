"""Multi-scale patch discriminator (upstream ``modules/discriminator.py``), used only in training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import kp2gaussian


class DownBlock2dD(nn.Module):
    """Discriminator block: conv 4x4 (no padding, optional spectral norm) -> InstanceNorm -> LeakyReLU -> pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool = False, kernel_size: int = 4,
                 pool: bool = False, sn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        if self.pool:
            out = F.avg_pool2d(out, (2, 2))
        return out


class Discriminator(nn.Module):
    """Patch discriminator; with ``use_kp`` the keypoint Gaussians are concatenated to the image."""

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4, max_features: int = 512,
                 sn: bool = False, use_kp: bool = False, num_kp: int = 10, kp_variance: float = 0.01) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            c_in = num_channels + num_kp * int(use_kp) if i == 0 else min(max_features, block_expansion * (2**i))
            c_out = min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(DownBlock2dD(c_in, c_out, norm=(i != 0), kernel_size=4, pool=(i != num_blocks - 1), sn=sn))
        self.down_blocks = nn.ModuleList(blocks)
        self.conv = nn.Conv2d(c_out, 1, kernel_size=1)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x: torch.Tensor, kp: dict | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            out = torch.cat([out, kp2gaussian(kp["value"], x.shape[2:], self.kp_variance)], dim=1)
        feature_maps = []
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


def _scale_key(scale: float) -> str:
    return str(scale).replace(".", "-")


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per image-pyramid scale; modules keyed ``discs.1``, ``discs.0-5``, ..."""

    def __init__(self, scales=(1,), **kwargs) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.discs = nn.ModuleDict({_scale_key(s): Discriminator(**kwargs) for s in self.scales})

    def forward(self, x: dict[str, torch.Tensor], kp: dict | None = None) -> dict:
        """x: ``prediction_<scale>`` images; returns ``feature_maps_<scale>`` and ``prediction_map_<scale>``."""
        out = {}
        for key, disc in self.discs.items():
            scale = key.replace("-", ".")
            feature_maps, prediction_map = disc(x["prediction_" + scale], kp)
            out["feature_maps_" + scale] = feature_maps
            out["prediction_map_" + scale] = prediction_map
        return out
