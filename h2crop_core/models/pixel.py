"""An optional per-pixel branch: each pixel's own S2 time series and full EnMAP spectrum, encoded without
any spatial mixing, beside the two faithful streams (``ModelConfig.pixel_branch``; off in every preset).

Why: at tiny widths the faithful EnMAP stream squeezes 218 bands into a few channels and its spectral
branch pools 4×4 pixels, so the narrow absorption features that separate the variants of one crop reach the
heads blurred; a per-pixel classical model (``h2crop baseline``) sees them whole. This branch gives the
heads the same view. Shapes::

    s2 (B, T, 10, H, W)  -> 1×1 conv T·10 -> d, GELU, 1×1 conv d -> d        (B, d, H, W)
    enmap (B, 218, h, w) -> 1×1 conv 218 -> d, GELU, 1×1 conv d -> d, ×3 nearest  (B, d, H, W)
    output: the two concatenated, (B, 2d, H, W), concatenated to the fused features
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.models.layers import cat_channels


def pixel_mlp(in_channels: int, dim: int) -> nn.Sequential:
    """Two 1×1 convolutions: an MLP applied to every pixel on its own."""
    return nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 1))


class PixelBranch(nn.Module):
    """Per-pixel encoders of the S2 series and (optionally) the EnMAP spectrum.

    Args:
        months: S2 frames T; s2_bands: bands per frame.
        enmap_bands: EnMAP bands, or 0 for S2 alone.
        dim: channels of each encoder's output.
        upscale: S2 pixels per EnMAP pixel side.
    """

    def __init__(self, months: int, s2_bands: int, enmap_bands: int, dim: int, upscale: int) -> None:
        super().__init__()
        self.s2 = pixel_mlp(months * s2_bands, dim)
        self.enmap = pixel_mlp(enmap_bands, dim) if enmap_bands else None
        self.upscale = upscale
        self.out_channels = dim * (2 if enmap_bands else 1)

    def forward(self, s2: Tensor, enmap: Tensor | None = None) -> Tensor:
        maps = [self.s2(rearrange(s2, "b t c h w -> b (t c) h w"))]
        if self.enmap is not None and enmap is not None:
            maps.append(F.interpolate(self.enmap(enmap), scale_factor=self.upscale, mode="nearest"))
        return cat_channels(maps)
