"""Export-time rewrite of the narrow head convolutions: a k x k conv to few channels as a 1 x k conv plus row sums.

FOMM's heads are 7x7 convolutions to a handful of channels: the generator's ``final`` (64 -> 3 at full
resolution), the dense-motion ``mask`` (-> K + 1) and ``occlusion`` (-> 1). ONNX Runtime's CPU
convolution works in blocks of 16 output channels, so a 3- or 1-channel output pays for a whole block
and runs far below the CPU's convolution peak (the profile is in ``benchmarks/RESULTS.md``).

The same sum in another order is cheap. With ``W`` of shape (O, C, kh, kw):

    y[o, i, j] = sum_r  z[r * O + o, i + r, j],   z = conv_(1 x kw)(x, W_rows),   W_rows[r * O + o] = W[o, :, r, :]

``z`` has ``kh * O`` channels (21 for ``final``), and the ``kh`` shifted row slices are added. The
multiply-adds are the same as before; only the order of the float sums changes (about 1e-7 here).
ONNX Runtime runs the 1 x kw conv to ``kh * O`` channels and the slice sums much faster than the narrow
k x k conv, and faster than a stride-2 form with a depth-to-space (the timings are in
``benchmarks/RESULTS.md``, "First round of graph changes").

Upstream's weights and the PyTorch modules are unchanged; only the traced graph differs, and the
exporter checks it against the original modules. The int8 quantiser keeps these convolutions in float
(their sums feed a sigmoid or a softmax): :data:`ROW_CONV_SCOPE` marks them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# The heads, by their attribute names in upstream's modules (generator, dense motion). The keypoint
# detector's ``kp`` head (35 -> 10 channels at 58x58 in vox-256) is no faster rewritten, so it keeps
# upstream's form.
HEADS = ("final", "mask", "occlusion")
# The rewritten conv is the child ``rows`` of the head, so its ONNX node is named ".../<head>/rows/Conv".
ROW_CONV_SCOPE = "/rows/"
# Rewrite convs with at most this many output channels (one block of ONNX Runtime's NCHWc layout) and a
# kernel at least this tall: below that the slices cost more than they save (the 40-channel jacobian
# head measured no gain).
MAX_OUT_CHANNELS = 16
MIN_KERNEL = 5


class RowSumConv(nn.Module):
    """Same function as ``conv`` (stride 1, no dilation, one group, zero padding), as a 1 x kw conv and row sums."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not narrow_head(conv):
            raise ValueError("RowSumConv handles stride-1, undilated, ungrouped, zero-padded Conv2d only")
        o, c, kh, kw = conv.weight.shape
        self.out_channels, self.kernel_rows = o, kh
        self.rows = nn.Conv2d(c, kh * o, (1, kw), padding=conv.padding, bias=False)
        with torch.no_grad():
            self.rows.weight.copy_(conv.weight.permute(2, 0, 1, 3).reshape(kh * o, c, 1, kw))
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(o)
        self.register_buffer("bias", bias.view(1, o, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.rows(x)  # (B, kh * O, H + 2 * pad_h, W_out)
        o, kh = self.out_channels, self.kernel_rows
        # Static slice ends (negative), so the graph holds no shape arithmetic.
        y = self.bias
        for r in range(kh):
            end = r - kh + 1
            y = y + z[:, r * o:(r + 1) * o, r:(end if end < 0 else None)]
        return y


def narrow_head(conv: nn.Module) -> bool:
    """Whether ``conv`` is one the rewrite handles and speeds up."""
    return (isinstance(conv, nn.Conv2d) and conv.out_channels <= MAX_OUT_CHANNELS
            and conv.kernel_size[0] >= MIN_KERNEL and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def with_row_sum_heads(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) whose narrow k x k head convolutions (:data:`HEADS`) are
    :class:`RowSumConv`s. Other convolutions keep their form, even where they are as narrow (the ``first``
    conv of a small model)."""
    module = copy.deepcopy(module).eval()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name in HEADS and narrow_head(child):
                setattr(parent, name, RowSumConv(child))
    return module
