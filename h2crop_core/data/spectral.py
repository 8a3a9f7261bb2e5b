"""Spectral augmentation: new fields of a known crop from the few labelled ones.

Two fields of one crop, and two parts of one field, differ in brightness (canopy density, soil, moisture,
illumination) and slightly in each S2 band's level (atmosphere, adjacency). With a few dozen labelled fields
a model memorises each by those exact values and meets a new field's as something unseen. This augmentation
draws them anew on every step, in reflectance where they act, on the z-scored batch:

* a smooth brightness field over the tile (log-normal, ``strength`` std, correlated over ``cell`` pixels),
  the same ground on S2 (every month) and EnMAP (pooled to its grid): reflectance × gain;
* S2 per-band level fields (reflectance + offset, std ``strength`` × 0.125 reflectance: 0.01 at 0.08).

In z-scores ``z = (stored - mean) / std`` a gain acts around the zero of reflectance, ``z0 = (offset -
mean) / std`` (``offset``: the stored value of reflectance 0, 1000 under L2A's offset), as
``z' = z0 + gain · (z - z0)``; an offset adds ``offset / std``. Labels and priors are untouched.

Measured (``benchmarks/small_data.py``): docs/benchmarks.md, "Small labelled sets".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from h2crop_core.data.normalise import NormStats

#: S2 band-level std (reflectance) per unit of strength
OFFSET_PER_STRENGTH = 0.125
#: correlation length of the fields, in S2 pixels (about a small field's side)
CELL = 16


def smooth_field(
    batch: int, channels: int, size: tuple[int, int], cell: int, generator: torch.Generator
) -> torch.Tensor:
    """(batch, channels, H, W) Gaussian fields of unit std, correlated over about ``cell`` pixels."""
    coarse = torch.randn((batch, channels, size[0] // cell + 2, size[1] // cell + 2), generator=generator)
    fine = F.interpolate(coarse, scale_factor=cell, mode="bilinear", align_corners=False)
    return fine[..., : size[0], : size[1]] * 1.5  # bilinear weights keep (2/3)² of the variance on average


@dataclass(frozen=True)
class SpectralJitter:
    """The augmentation for one dataset's statistics and reflectance encoding.

    Attributes:
        strength: std of the log brightness; 0 turns it off.
        s2_zero, enmap_zero: z-score of reflectance 0 per band.
        s2_unit: z-score change of +1 reflectance per S2 band (10000 / std under ×10000 encodings).
        factor: S2 pixels per EnMAP pixel side.
    """

    strength: float
    s2_zero: torch.Tensor
    enmap_zero: torch.Tensor | None
    s2_unit: torch.Tensor
    factor: int = 3
    cell: int = CELL

    @classmethod
    def for_stats(
        cls, strength: float, stats: NormStats, s2_offset: float, scale: float, factor: int
    ) -> SpectralJitter:
        """From the training statistics; ``s2_offset`` is the stored value of reflectance 0 and ``scale``
        the stored value of reflectance 1 minus it (10000 for the L2A encodings)."""
        s2_std = torch.as_tensor(stats.s2_std, dtype=torch.float32)
        s2_zero = (s2_offset - torch.as_tensor(stats.s2_mean, dtype=torch.float32)) / s2_std
        enmap_zero = None
        if stats.enmap_mean is not None and len(stats.enmap_mean):
            enmap_zero = -torch.as_tensor(stats.enmap_mean, dtype=torch.float32) / torch.as_tensor(
                stats.enmap_std, dtype=torch.float32
            )
        return cls(strength, s2_zero, enmap_zero, scale / s2_std, factor)

    def __call__(self, batch: dict, generator: torch.Generator) -> dict:
        """The batch with S2 (B, T, C, H, W) and EnMAP (B, bands, H/f, W/f) jittered; other keys shared."""
        if self.strength <= 0 or "s2" not in batch:
            return batch
        s2 = batch["s2"]
        size, count, bands = s2.shape[-2:], s2.shape[0], s2.shape[2]
        gain = torch.exp(self.strength * smooth_field(count, 1, size, self.cell, generator)).to(s2)  # (B, 1, H, W)
        level = OFFSET_PER_STRENGTH * self.strength * smooth_field(count, bands, size, self.cell, generator).to(s2)
        zero, unit = self.s2_zero.to(s2)[:, None, None], self.s2_unit.to(s2)[:, None, None]
        out = dict(batch)
        out["s2"] = zero + rearrange(gain, "b 1 h w -> b 1 1 h w") * (s2 - zero) + (level * unit)[:, None]
        if "enmap" in batch and self.enmap_zero is not None:
            enmap = batch["enmap"]
            coarse = F.avg_pool2d(gain, self.factor)  # the same ground on EnMAP's grid
            ezero = self.enmap_zero.to(enmap)[:, None, None]
            out["enmap"] = ezero + coarse * (enmap - ezero)
        return out
