"""Unsupervised keypoint detector (paper Sec. 3.2 / upstream ``modules/keypoint_detector.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid

Keypoints = dict  # {"value": (B, K, 2), "jacobian": (B, K, 2, 2)} — upstream's layout


def heatmap_to_keypoints(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected coordinate under each heatmap.

    Args:
        heatmap: float (B, K, h, w), each map sums to 1.
    Returns:
        float (B, K, 2), (x, y) in [-1, 1] on the heatmap's own grid.
    """
    h, w = heatmap.shape[2:]
    grid = make_coordinate_grid(h, w, heatmap.dtype, heatmap.device).view(1, 1, h, w, 2)
    return (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))


class KPDetector(nn.Module):
    """Predicts K keypoints and, optionally, a 2x2 jacobian (local affine frame) per keypoint.

    The heatmap is a softmax of the ``kp`` conv's logits over space at ``temperature``; keypoints are
    its expected coordinates (Eq. 6 neighbourhood: first-order Taylor expansion around each keypoint).
    """

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                   num_blocks=num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=(7, 7),
                                      padding=pad)
            # Identity jacobians at initialisation, as upstream.
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1, 0, 0, 1] * self.num_jacobian_maps, dtype=torch.float32))
        else:
            self.jacobian = None
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x: torch.Tensor) -> Keypoints:
        """
        Args:
            x: float (B, C, H, W), RGB in [0, 1].
        Returns:
            {"value": float (B, K, 2) in [-1, 1], "jacobian": float (B, K, 2, 2)} (jacobian only if estimated).
        """
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        logits = self.kp(feature_map)  # (B, K, h, w)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        out = {"value": heatmap_to_keypoints(heatmap)}
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).view(b, k, 4, -1).sum(dim=-1)
            out["jacobian"] = jacobian.view(b, k, 2, 2)
        return out
