"""An optional per-pixel branch: each pixel's own S2 time series and full EnMAP spectrum, encoded without
any spatial mixing, beside the two faithful streams (``ModelConfig.pixel_branch``; off in every preset).

Why: at tiny widths the faithful EnMAP stream squeezes 218 bands into a few channels and its spectral
branch pools 4×4 pixels, so the narrow absorption features that separate the variants of one crop reach the
heads blurred; a per-pixel classical model (``h2crop baseline``) sees them whole. This branch gives the
heads the same view. Shapes::

    s2 (B, T, 10, H, W)  -> 1×1 conv T·10 -> d, GELU, 1×1 conv d -> d        (B, d, H, W)
    enmap (B, 218, h, w) -> 1×1 conv 218 -> d, GELU, 1×1 conv d -> d, ×3 nearest  (B, d, H, W)
    output: the two concatenated, (B, 2d, H, W), then (``ModelConfig.pixel_join``)
      concat: concatenated to the fused features, before the heads
      logits: a 1×1 conv 2d -> n_k per level, added to the heads' logits (a per-pixel classifier beside
              the spatial model; the heads keep their width, so it costs little)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.models.layers import cat_channels

#: how the branch joins the model (see the module docstring)
PIXEL_JOINS: tuple[str, ...] = ("concat", "logits")


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
        classes: with ``join="logits"``, the class count of each predicted level: a 1×1 classifier each.
    """

    def __init__(self, months: int, s2_bands: int, enmap_bands: int, dim: int, upscale: int, classes: Sequence[int] = ()) -> None:
        super().__init__()
        self.s2 = pixel_mlp(months * s2_bands, dim)
        self.enmap = pixel_mlp(enmap_bands, dim) if enmap_bands else None
        self.upscale = upscale
        self.out_channels = dim * (2 if enmap_bands else 1)
        self.classifiers = nn.ModuleList(nn.Sequential(nn.GELU(), nn.Conv2d(self.out_channels, n, 1)) for n in classes)

    def add_logits(self, logits: list[Tensor], features: Tensor) -> list[Tensor]:
        """The heads' logits plus this branch's own, level by level (``join="logits"``)."""
        return [level + classify(features) for level, classify in zip(logits, self.classifiers, strict=True)]

    def forward(self, s2: Tensor, enmap: Tensor | None = None) -> Tensor:
        maps = [self.s2(rearrange(s2, "b t c h w -> b (t c) h w"))]
        if self.enmap is not None and enmap is not None:
            maps.append(F.interpolate(self.enmap(enmap), scale_factor=self.upscale, mode="nearest"))
        return cat_channels(maps)
