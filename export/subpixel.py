"""Export-time rewrite of the up blocks: nearest x2 upsample + 3x3 conv as four 2x2 convs at low resolution.

``UpBlock2d`` upsamples by 2 (nearest) and then runs a 3x3 convolution at the high resolution. Every
output pixel ``(2i + a, 2j + b)`` of that convolution only sees low-resolution pixels in a 2x2 window,
because neighbouring upsampled pixels are copies. Summing the 3x3 taps that land on the same
low-resolution pixel gives one 2x2 kernel per output phase ``(a, b)``:

    rows for a = 0: (i - 1, i) with taps (k0, k1 + k2);  a = 1: (i, i + 1) with taps (k0 + k1, k2)

(the same for columns with ``b``). Four 2x2 convolutions on the low-resolution input, interleaved, give
exactly the same result with 16 instead of 36 multiply-adds per input channel and low-resolution pixel,
and no upsampled copy of the input is ever written, which makes the vox-256 ``generator_frame`` faster
in fp32 and in int8 (``benchmarks/RESULTS.md``). The rewritten blocks' weights grow from 9 to 16 taps (a
file a little larger: ``docs/export.md``). The batch norm (eval mode) is folded into the kernels.
Upstream's weights and the PyTorch modules are unchanged; only the traced graph differs, and the exporter
checks it against the original modules.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fomm_deploy.training.model.blocks import Decoder, UpBlock2d

# Rows (or columns) of the 3x3 kernel summed into each of the two taps, per phase.
_PHASE_TAPS = (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),  # phase 0: low-res (i - 1, i)
               torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))  # phase 1: low-res (i, i + 1)


class SubpixelUpBlock(nn.Module):
    """Same function as an eval-mode ``UpBlock2d`` (3x3, padding 1), computed at low resolution.

    One 2x2 convolution with padding 1 holds the four phase kernels (4 x out channels) and gives an
    (H + 1, W + 1) map; phase ``(a, b)`` is its window starting at ``(a, b)``. The phases are then
    interleaved into the (2H, 2W) output.
    """

    def __init__(self, block: UpBlock2d) -> None:
        super().__init__()
        conv, norm = block.conv, block.norm
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("SubpixelUpBlock handles 3x3 convolutions with padding 1 only")
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            kernel = conv.weight * scale[:, None, None, None]
            bias = (conv.bias if conv.bias is not None else torch.zeros_like(scale)) - norm.running_mean
            bias = bias * scale + norm.bias
            phases = [torch.einsum("ry,oiyx,cx->oirc", _PHASE_TAPS[a], kernel, _PHASE_TAPS[b])
                      for a in (0, 1) for b in (0, 1)]
        self.out_features = conv.out_channels
        self.register_buffer("weight", torch.cat(phases).contiguous())  # (4 * out, in, 2, 2), phase-major
        self.register_buffer("bias", bias.repeat(4).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ReLU commutes with the interleave; applied to the convolution's output, the int8 quantiser
        # folds it into the convolution (quantize.int8_node_names).
        y = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))  # (N, 4C, H + 1, W + 1)
        # Windows by negative ends and the output shape read from ``out``: nothing reads the shape of ``x``.
        # (In the int8 graph ``x`` is a dequantised tensor; every extra reader of it made ONNX Runtime
        # dequantise it once more, three full copies per block.)
        c = self.out_features
        p00, p01 = y[:, :c, :-1, :-1], y[:, c:2 * c, :-1, 1:]
        p10, p11 = y[:, 2 * c:3 * c, 1:, :-1], y[:, 3 * c:, 1:, 1:]
        out = torch.stack([torch.stack([p00, p01], dim=-1), torch.stack([p10, p11], dim=-1)], dim=-3)
        n, _, h, _, w, _ = out.shape
        return out.reshape(n, c, 2 * h, 2 * w)  # (N, C, H, 2, W, 2) -> (N, C, 2H, 2W)


def with_subpixel_upsampling(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) whose full-resolution ``UpBlock2d``s are ``SubpixelUpBlock``s.

    Only the generator's own decoder is rewritten. The hourglass decoders (keypoint detector, dense
    motion) work at a quarter of the frame size or less, where the saving is small, and their wide
    low-resolution blocks would make the graphs much larger (16 taps instead of 9 per weight).
    """
    module = copy.deepcopy(module).eval()
    inside_hourglass = {id(m) for d in module.modules() if isinstance(d, Decoder) for m in d.modules()}
    for parent in list(module.modules()):
        if id(parent) in inside_hourglass:
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, UpBlock2d):
                setattr(parent, name, SubpixelUpBlock(child))
    return module
