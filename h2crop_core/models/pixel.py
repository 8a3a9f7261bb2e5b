"""An optional per-pixel branch: each pixel's own S2 time series and full EnMAP spectrum, encoded without
any spatial mixing, beside the two faithful streams (``ModelConfig.pixel_branch``; off in every preset).

Why: at tiny widths the faithful EnMAP stream squeezes 218 bands into a few channels and its spectral
branch pools 4×4 pixels, so the narrow absorption features that separate the variants of one crop reach the
heads blurred; a per-pixel classical model (``h2crop baseline``) sees them whole. This branch gives the
heads the same view. Shapes::

    s2 (B, T, 10, H, W)  -> 1×1 conv T·10 -> d, GELU, 1×1 conv d -> d        (B, d, H, W)  (pixel_inputs=all)
    enmap (B, 218, h, w) -> 1×1 conv 218 -> d, GELU, 1×1 conv d -> d, ×3 nearest  (B, d, H, W)
    output: the two concatenated, (B, 2d, H, W), then (``ModelConfig.pixel_join``)
      concat: concatenated to the fused features, before the heads
      logits: a 1×1 conv 2d -> n_k per level, added to the heads' logits (a per-pixel classifier beside
              the spatial model; the heads keep their width, so it costs little)

On a few labelled parcels a per-pixel model memorises them by their exact values (each parcel has its own
brightness and S2 offsets); ``noise`` (Gaussian, on the normalised inputs, training only) and reading the
EnMAP spectrum alone are the measured remedies (benchmarks/small_data.py), as is training the ``logits``
classifier on its own loss too (``ModelConfig.pixel_loss``, :func:`h2crop_core.models.loss.model_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.models.layers import cat_channels

#: how the branch joins the model (see the module docstring)
PIXEL_JOINS: tuple[str, ...] = ("concat", "logits")
#: what the branch reads: both sensors, or the EnMAP spectrum alone
PIXEL_INPUTS: tuple[str, ...] = ("all", "enmap")


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
        inputs: ``all`` or ``enmap`` (the spectrum alone; needs ``enmap_bands``).
        noise: std of the Gaussian noise added to the inputs in training mode.
    """

    def __init__(
        self,
        months: int,
        s2_bands: int,
        enmap_bands: int,
        dim: int,
        upscale: int,
        classes: Sequence[int] = (),
        *,
        inputs: str = "all",
        noise: float = 0.0,
    ) -> None:
        super().__init__()
        if inputs not in PIXEL_INPUTS or (inputs == "enmap" and not enmap_bands):
            raise ValueError(
                f"inputs must be one of {PIXEL_INPUTS} (enmap needs enmap_bands); got {inputs!r} with {enmap_bands} bands"
            )
        self.s2 = pixel_mlp(months * s2_bands, dim) if inputs == "all" else None
        self.enmap = pixel_mlp(enmap_bands, dim) if enmap_bands else None
        self.upscale, self.noise = upscale, noise
        self.out_channels = dim * ((self.s2 is not None) + (self.enmap is not None))
        self.classifiers = nn.ModuleList(nn.Sequential(nn.GELU(), nn.Conv2d(self.out_channels, n, 1)) for n in classes)

    def classify(self, features: Tensor) -> list[Tensor]:
        """This branch's own per-level logits (``join="logits"``)."""
        return [classify(features) for classify in self.classifiers]

    def _noisy(self, x: Tensor) -> Tensor:
        return x + self.noise * torch.randn_like(x) if self.training and self.noise > 0 else x

    def forward(self, s2: Tensor, enmap: Tensor | None = None) -> Tensor:
        maps = [self.s2(rearrange(self._noisy(s2), "b t c h w -> b (t c) h w"))] if self.s2 is not None else []
        if self.enmap is not None and enmap is not None:
            maps.append(F.interpolate(self.enmap(self._noisy(enmap)), scale_factor=self.upscale, mode="nearest"))
        return cat_channels(maps)
