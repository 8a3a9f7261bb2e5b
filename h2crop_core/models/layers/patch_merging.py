"""Patch merging between Swin stages: 2×2 spatial neighbours concatenated, time averaged in groups."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn


def merge_time(x: Tensor, step: int) -> Tensor:
    """Average groups of ``step`` consecutive frames of a (B, D, H, W, C) volume -> (B, ⌈D/step⌉, H, W, C).

    A last, incomplete group is averaged over its real frames only. (The research code padded it with a
    zero frame and divided by ``step``, halving the last month's features whenever D was odd.)
    """
    frames = x.shape[1]
    if step == 1:
        return x
    missing = (-frames) % step
    if missing:
        x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, missing))
    summed = reduce(x, "b (d s) h w c -> b d h w c", "sum", s=step)
    counts = torch.full((summed.shape[1],), float(step), device=x.device, dtype=summed.dtype)
    counts[-1] = step - missing
    return summed / counts[:, None, None, None]


class PatchMerging3D(nn.Module):
    """Halve height and width (2×2 neighbours -> channels, LayerNorm, Linear 4C -> 2C) and merge time by
    averaging groups of ``time_step`` frames.

    Parameter names (``norm``, ``reduction``) and the order of the four neighbours follow Video Swin, so
    pretrained weights apply unchanged.

    Args:
        dim: input channels C.
        time_step: frames averaged into one (1 keeps time).
    """

    def __init__(self, dim: int, time_step: int = 2) -> None:
        super().__init__()
        self.time_step = time_step
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, H, W, C) -> (B, ⌈D/time_step⌉, ⌈H/2⌉, ⌈W/2⌉, 2C)."""
        if x.shape[2] % 2 or x.shape[3] % 2:
            x = F.pad(x, (0, 0, 0, x.shape[3] % 2, 0, x.shape[2] % 2))
        x = merge_time(x, self.time_step)
        # neighbour order (y, x) = (0,0), (1,0), (0,1), (1,1): x-offset outer, y-offset inner, as Video Swin
        x = rearrange(x, "b d (h dy) (w dx) c -> b d h w (dx dy c)", dy=2, dx=2)
        return self.reduction(self.norm(x))
