"""Channels-last (NHWC) layout for the convolution-heavy parts of the model.

oneDNN (CPU) and cuDNN (GPU) run bf16 convolutions natively in NHWC; with NCHW tensors a convolution may
pay a reorder in and out. On this 2-core CPU the training step measured the same either way; the layout is
for GPUs, where NHWC is what tensor-core convolutions want. Converting the convolution weights is enough to
make every convolution output NHWC; the one remaining trap is ``torch.cat`` of mixed layouts (a conv output
with an NCHW prior one-hot or encoder skip), which is slow and gives NCHW again, hence :func:`cat_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def is_channels_last(x: Tensor) -> bool:
    """True if ``x`` is laid out NHWC (and not also plain contiguous, as 1×1 maps or one channel are)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def cat_channels(maps: Sequence[Tensor]) -> Tensor:
    """Concatenate (B, C_i, H, W) maps along channels, in NHWC if any of them is NHWC."""
    if any(is_channels_last(m) for m in maps):
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    return torch.cat(list(maps), dim=1)


def convs_to_channels_last(module: nn.Module) -> None:
    """Lay out the weights of every 2-D convolution in ``module`` NHWC, in place (values unchanged)."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.to(memory_format=torch.channels_last)
