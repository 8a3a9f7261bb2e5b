"""The recipe's loss: per-level pixel cross-entropy over labelled pixels, summed over the levels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from h2crop_core.taxonomy import UNLABELLED


def hierarchical_loss(
    logits: list[torch.Tensor], label: torch.Tensor, levels: tuple[int, ...], weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over levels of the pixel cross-entropy (label 255 ignored; a level with no labelled pixel adds 0).

    Args:
        weight: (B, 4) weight of each sample's labelled pixels at levels 1..4
            (:func:`h2crop_core.data.sampling.draw_weights`): a level's loss is then the weighted sum of its
            pixel losses over the batch size, so that averaged over an epoch's batches it is the mean over
            the epoch's labelled pixels (a batch of copies of one tile keeps its weights). None: the plain
            mean over the batch's labelled pixels (the benchmark's).
    """
    total = logits[0].new_zeros(())
    for level, level_logits in zip(levels, logits):
        target = label[:, level - 1].long()
        if weight is None:
            labelled = (target != UNLABELLED).sum()
            loss = F.cross_entropy(level_logits, target, ignore_index=UNLABELLED, reduction="sum")
            total = total + loss / labelled.clamp(min=1)
            continue
        sample_weight = weight[:, level - 1].to(level_logits.dtype)  # (B,): one number per sample of the batch
        pixel_weight = sample_weight[:, None, None] * (target != UNLABELLED)  # target: (B, H, W)
        loss = F.cross_entropy(level_logits, target, ignore_index=UNLABELLED, reduction="none")
        total = total + (loss * pixel_weight).sum() / len(target)
    return total


def model_loss(
    outputs: list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]],
    label: torch.Tensor,
    levels: tuple[int, ...],
    pixel_weight: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of a model's training outputs: :func:`hierarchical_loss` of its logits, plus
    ``pixel_weight`` × that of the pixel branch's own logits when the model returns them too
    (``ModelConfig.pixel_loss``); ``weight``: per-sample weights, as there."""
    if isinstance(outputs, tuple):
        logits, pixel = outputs
        return hierarchical_loss(logits, label, levels, weight) + pixel_weight * hierarchical_loss(
            pixel, label, levels, weight
        )
    return hierarchical_loss(outputs, label, levels, weight)
