"""Dense motion network (paper Sec. 3.2-3.3 / upstream ``modules/dense_motion.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, Hourglass, inverse_2x2, kp2gaussian, make_coordinate_grid


class DenseMotionNetwork(nn.Module):
    """Combines K+1 sparse motions (background + one local affine motion per keypoint) into a dense flow.

    Also predicts the occlusion map (Sec. 3.3) when ``estimate_occlusion_map``.
    """

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int,
        estimate_occlusion_map: bool = False,
        scale_factor: float = 1,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def create_heatmap_representations(self, h: int, w: int, kp_driving, kp_source) -> torch.Tensor:
        """Difference of keypoint Gaussians, background first. Returns float (B, K+1, 1, h, w)."""
        heatmap = kp2gaussian(kp_driving["value"], (h, w), self.kp_variance) - kp2gaussian(
            kp_source["value"], (h, w), self.kp_variance
        )
        zeros = torch.zeros_like(heatmap[:, :1])
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)

    def create_sparse_motions(self, h: int, w: int, kp_driving, kp_source) -> torch.Tensor:
        """Eq. 4: T_{s<-d}(z) ~ kp_s + J_s J_d^-1 (z - kp_d), per keypoint, plus the identity (background).

        Returns:
            float (B, K+1, h, w, 2), (x, y) sampling coordinates into the source.
        """
        value_d = kp_driving["value"]
        b, k = value_d.shape[:2]
        identity = make_coordinate_grid(h, w, value_d.dtype, value_d.device).view(1, 1, h, w, 2)
        z = identity - value_d.view(b, k, 1, 1, 2)  # (B, K, h, w, 2)
        if "jacobian" in kp_driving:
            jac = torch.matmul(kp_source["jacobian"], inverse_2x2(kp_driving["jacobian"]))  # (B, K, 2, 2)
            jac = jac.view(b, k, 1, 1, 2, 2)
            # 2x2 matrix times vector, written out (cheaper and simpler to export than batched matmul).
            zx, zy = z[..., 0], z[..., 1]
            z = torch.stack([jac[..., 0, 0] * zx + jac[..., 0, 1] * zy,
                             jac[..., 1, 0] * zx + jac[..., 1, 1] * zy], dim=-1)
        driving_to_source = z + kp_source["value"].view(b, k, 1, 1, 2)
        return torch.cat([identity.expand(b, 1, h, w, 2), driving_to_source], dim=1)

    def create_deformed_source_image(self, source: torch.Tensor, sparse_motions: torch.Tensor) -> torch.Tensor:
        """The (downsampled) source warped by each sparse motion. Returns float (B, K+1, C, h, w)."""
        b, c, h, w = source.shape
        n = sparse_motions.shape[1]
        source_repeat = source.unsqueeze(1).expand(b, n, c, h, w).reshape(b * n, c, h, w)
        grid = sparse_motions.reshape(b * n, h, w, 2)
        warped = F.grid_sample(source_repeat, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=self.align_corners)
        return warped.view(b, n, c, h, w)

    def forward(self, source_image: torch.Tensor, kp_driving, kp_source) -> dict[str, torch.Tensor]:
        """
        Args:
            source_image: float (B, C, H, W) in [0, 1].
            kp_driving, kp_source: {"value": (B, K, 2), "jacobian": (B, K, 2, 2)}.
        Returns:
            dict with ``sparse_deformed`` (B, K+1, C, h, w), ``mask`` (B, K+1, h, w), ``deformation``
            (B, h, w, 2) and, if estimated, ``occlusion_map`` (B, 1, h, w); h, w = scale_factor * (H, W).
        """
        return self.forward_downsampled(self.downsample(source_image), kp_driving, kp_source)

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        """The source at the dense-motion resolution (depends only on the source: computed once per source)."""
        return self.down(source_image) if self.scale_factor != 1 else source_image

    def forward_downsampled(self, source_image: torch.Tensor, kp_driving, kp_source) -> dict[str, torch.Tensor]:
        """``forward`` on a source already passed through ``downsample``."""
        b, _, h, w = source_image.shape
        heatmap = self.create_heatmap_representations(h, w, kp_driving, kp_source)
        sparse_motion = self.create_sparse_motions(h, w, kp_driving, kp_source)
        deformed_source = self.create_deformed_source_image(source_image, sparse_motion)
        hourglass_in = torch.cat([heatmap, deformed_source], dim=2).view(b, -1, h, w)
        prediction = self.hourglass(hourglass_in)

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, h, w)
        # Weighted sum of the K+1 motions.
        deformation = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)
        out = {"sparse_deformed": deformed_source, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out
