"""The recipe's loss: per-level pixel cross-entropy over labelled pixels, summed over the levels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from h2crop_core.taxonomy import UNLABELLED


def hierarchical_loss(logits: list[torch.Tensor], label: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """Sum over levels of the pixel cross-entropy (label 255 ignored; a level with no labelled pixel adds 0)."""
    total = logits[0].new_zeros(())
    for level, level_logits in zip(levels, logits):
        target = label[:, level - 1].long()
        labelled = (target != UNLABELLED).sum()
        loss = F.cross_entropy(level_logits, target, ignore_index=UNLABELLED, reduction="sum")
        total = total + loss / labelled.clamp(min=1)
    return total
