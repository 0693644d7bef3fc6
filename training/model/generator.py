"""Occlusion-aware generator (paper Sec. 3.3 / upstream ``modules/generator.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .dense_motion import DenseMotionNetwork


class OcclusionAwareGenerator(nn.Module):
    """Encodes the source, warps its features with the dense motion, masks them by the occlusion map and decodes.

    The source encoding (``encode_source``) depends only on the source image, so deployments compute it
    once per source; ``forward`` is the upstream-equivalent whole step.
    """

    def __init__(
        self,
        num_channels: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: dict | None = None,
        estimate_jacobian: bool = False,  # accepted for upstream compatibility; the jacobian is used iff present
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(
                num_kp=num_kp, num_channels=num_channels, estimate_occlusion_map=estimate_occlusion_map,
                align_corners=align_corners, **dense_motion_params,
            )
        else:
            self.dense_motion_network = None
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * (2**i)), min(max_features, block_expansion * (2 ** (i + 1))))
            for i in range(num_down_blocks)
        )
        n = num_down_blocks
        self.up_blocks = nn.ModuleList(
            UpBlock2d(min(max_features, block_expansion * (2 ** (n - i))), min(max_features, block_expansion * (2 ** (n - i - 1))))
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        bottleneck_features = min(max_features, block_expansion * (2**n))
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(bottleneck_features, kernel_size=3, padding=1))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels
        self.align_corners = align_corners

    def deform_input(self, inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Backward-warp ``inp`` (B, C, H, W) with ``deformation`` (B, h, w, 2), resized bilinearly to (H, W)."""
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if h_old != h or w_old != w:
            deformation = deformation.permute(0, 3, 1, 2)
            deformation = F.interpolate(deformation, size=(h, w), mode="bilinear", align_corners=False)
            deformation = deformation.permute(0, 2, 3, 1)
        return F.grid_sample(inp, deformation, mode="bilinear", padding_mode="zeros", align_corners=self.align_corners)

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """``first`` + ``down_blocks`` on the source. float (B, C, H, W) -> (B, F, H/2^n, W/2^n)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Bottleneck, up blocks, final conv and sigmoid. Returns float (B, C, H, W) in [0, 1]."""
        out = self.bottleneck(features)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    def forward(self, source_image: torch.Tensor, kp_driving, kp_source, *, with_deformed: bool = True):
        """
        Args:
            source_image: float (B, C, H, W) in [0, 1].
            kp_driving, kp_source: {"value": (B, K, 2), "jacobian": (B, K, 2, 2)}; kp_driving is normally
                the output of ``normalize_kp``.
            with_deformed: also warp the full-resolution source (``deformed``, for visualisation only).
        Returns:
            dict with ``prediction`` (B, C, H, W) in [0, 1] and, with a dense-motion network, ``mask``,
            ``sparse_deformed``, ``deformation``, ``occlusion_map`` and ``deformed``.
        """
        features = self.encode_source(source_image)
        source_down = self.dense_motion_network.downsample(source_image) if self.dense_motion_network else None
        result = self.animate_encoded(features, source_down, kp_driving, kp_source)
        if with_deformed and "deformation" in result:
            result["deformed"] = self.deform_input(source_image, result["deformation"])
        return result

    def animate_encoded(self, features: torch.Tensor, source_down: torch.Tensor | None, kp_driving, kp_source):
        """The per-frame part of ``forward``, given what depends only on the source.

        Args:
            features: ``encode_source(source)`` (B, F, H/2^n, W/2^n).
            source_down: ``dense_motion_network.downsample(source)`` (None without a dense-motion network).
        Returns:
            the dict of ``forward`` without ``deformed``.
        """
        out = features
        result = {}
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network.forward_downsampled(source_down, kp_driving, kp_source)
            result["mask"] = motion["mask"]
            result["sparse_deformed"] = motion["sparse_deformed"]
            result["deformation"] = motion["deformation"]
            out = self.deform_input(out, motion["deformation"])
            occlusion_map = motion.get("occlusion_map")
            if occlusion_map is not None:
                result["occlusion_map"] = occlusion_map
                if out.shape[2:] != occlusion_map.shape[2:]:
                    occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode="bilinear",
                                                  align_corners=False)
                out = out * occlusion_map
        result["prediction"] = self.decode(out)
        return result
