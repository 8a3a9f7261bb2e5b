"""3-D patch embedding of a time series: one token per (time, height, width) tubelet."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from h2crop_core.models.layers.windows import Size3


class PatchEmbed3D(nn.Module):
    """Conv3d with kernel = stride = ``patch_size`` over (B, C, T, H, W), zero-padding each axis up to a
    multiple of the patch (an odd number of months gets one zero month: the convolution sees it as a
    missing observation of mean value, since inputs are z-scored).

    Parameter names (``proj``) follow AgriFM's patch embedding so its weights load by name.

    Args:
        in_channels: spectral bands per frame.
        embed_dim: token width.
        patch_size: (time, height, width) of a tubelet.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: Size3) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, embed_dim, ⌈T/pt⌉, ⌈H/ph⌉, ⌈W/pw⌉)."""
        pad = [(-s) % p for s, p in zip(x.shape[2:], self.patch_size)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        return self.proj(x)
