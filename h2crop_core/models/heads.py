"""Hierarchical classification heads and hierarchy-consistent decoding.

Heads run level 1 -> 4 at full resolution. Each is conv3×3 (d -> d/2), ReLU, conv1×1 -> n_k logits. Level
k > 1 sees the fused features concatenated with level k−1's raw logits (the cascade); with priors, every
level also sees the one-hot map of last year's crop at that level (255, unlabelled, is an all-zero vector).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.errors import SettingError
from h2crop_core.models.layers import cat_channels, conv3x3
from h2crop_core.taxonomy import Taxonomy


class LevelHead(nn.Sequential):
    """conv3×3 (in -> in/2), ReLU, conv1×1 -> ``num_classes`` logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        hidden = in_channels // 2
        super().__init__(
            conv3x3(in_channels, hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, num_classes, kernel_size=1)
        )


def prior_one_hot(prior: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """(B, H, W) class ids -> (B, num_classes, H, W) one-hot; ids outside [0, num_classes) (255 =
    unlabelled) give all zeros."""
    classes = torch.arange(num_classes, device=prior.device).view(1, num_classes, 1, 1)
    return (prior.long().unsqueeze(1) == classes).to(dtype)


class HierarchicalHeads(nn.Module):
    """One :class:`LevelHead` per predicted level, cascaded when there are several.

    Args:
        in_channels: fused feature channels.
        num_classes: classes (background included) of all four levels, e.g. (7, 37, 83, 102).
        levels: the levels to predict, 1-based and increasing; (1, 2, 3, 4) for the cascade, or a single
            level for the "independent head" variant.
        use_prior: feed last year's crop (one-hot) to every level.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: Sequence[int],
        levels: Sequence[int] = (1, 2, 3, 4),
        use_prior: bool = False,
    ) -> None:
        super().__init__()
        if not levels or list(levels) != sorted(set(levels)) or not set(levels) <= set(range(1, len(num_classes) + 1)):
            raise SettingError(
                f"levels must be increasing, unique and within 1..{len(num_classes)}, got {tuple(levels)}"
            )
        self.levels = tuple(levels)
        self.num_classes = tuple(num_classes)
        self.use_prior = use_prior
        self.heads = nn.ModuleDict()
        previous: int | None = None
        for level in self.levels:
            n = num_classes[level - 1]
            extra = (previous or 0) + (n if use_prior else 0)
            self.heads[f"level{level}"] = LevelHead(in_channels + extra, n)
            previous = n

    def forward(self, features: Tensor, prior: Tensor | None = None) -> list[Tensor]:
        """(B, C, H, W) features (+ (B, 4, H, W) priors) -> one (B, n_k, H, W) logits map per level."""
        if self.use_prior and prior is None:
            raise ValueError("this model uses last year's crop: pass prior=(B, 4, H, W)")
        logits: list[Tensor] = []
        for level in self.levels:
            inputs = [features] if not logits else [features, logits[-1]]
            if self.use_prior:
                inputs.append(prior_one_hot(prior[:, level - 1], self.num_classes[level - 1], features.dtype))  # type: ignore[index]
            logits.append(self.heads[f"level{level}"](cat_channels(inputs)))
        return logits


# ------------------------------------------------------------------------------------------- decoding
#: how logits become class maps: per-level ``argmax``, or ``consistent`` (the most probable taxonomy path)
DECODES: tuple[str, ...] = ("argmax", "consistent")
#: what a user may ask for: a decode, or ``auto`` (consistent for four-level models, argmax otherwise)
DECODE_CHOICES: tuple[str, ...] = ("auto",) + DECODES
#: the one default of ``h2crop evaluate`` and ``h2crop map``
DEFAULT_DECODE = "auto"


def resolve_decode(decode: str, levels: Sequence[int]) -> str:
    """The decode to run for a model predicting ``levels``: ``auto`` becomes ``consistent`` for a four-level
    model and ``argmax`` otherwise; ``consistent`` for a model without the four levels is refused.

    Raises:
        SettingError: an unknown decode, or ``consistent`` for a model that does not predict all four levels.
    """
    if decode not in DECODE_CHOICES:
        raise SettingError(f"decode must be one of {DECODE_CHOICES}, got {decode!r}")
    four_levels = tuple(levels) == (1, 2, 3, 4)
    if decode == "auto":
        return "consistent" if four_levels else "argmax"
    if decode == "consistent" and not four_levels:
        raise SettingError(
            f"consistent decoding needs a four-level model; this one predicts levels {tuple(levels)}: use --decode argmax"
        )
    return decode


def decode_argmax(logits: Sequence[Tensor]) -> Tensor:
    """Per-level argmax: four (B, n_k, H, W) logits -> (B, 4, H, W) class ids (levels may disagree)."""
    return torch.stack([level.argmax(dim=1) for level in logits], dim=1)


def decode_consistent(logits: Sequence[Tensor], paths: np.ndarray | Tensor) -> Tensor:
    """The most probable taxonomy path per pixel: (B, 4, H, W) class ids that always form a valid path.

    Each leaf's path (row of ``paths``, the all-background path included) scores the sum of its four
    nodes' log-probabilities; the best path wins. Summing log-probabilities treats the four heads as
    independent evidence about the same leaf.

    Args:
        logits: four (B, n_k, H, W) logits maps, levels 1..4.
        paths: (num_leaves + 1, 4) level-1..4 ids of every leaf, as :attr:`Taxonomy.paths`.
    """
    paths, score = _path_scores(logits, paths)
    leaf = score.argmax(dim=1)  # (B, H, W)
    return rearrange(paths[leaf], "b h w k -> b k h w")


def _path_scores(logits: Sequence[Tensor], paths: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """The paths as a long tensor and each path's score: (B, paths, H, W) summed log-probabilities."""
    if len(logits) != 4:
        raise ValueError(f"consistent decoding needs the four levels' logits, got {len(logits)}")
    paths = torch.as_tensor(np.asarray(paths), device=logits[0].device, dtype=torch.long)
    for k, level in enumerate(logits):
        if int(paths[:, k].max()) >= level.shape[1]:
            raise ValueError(
                f"the taxonomy has level-{k + 1} id {int(paths[:, k].max())} but the model predicts {level.shape[1]} classes"
            )
    return paths, sum(
        torch.log_softmax(level.float(), dim=1).index_select(1, paths[:, k]) for k, level in enumerate(logits)
    )


def decode_with_confidence(
    logits: Sequence[Tensor], decode: str, paths: np.ndarray | Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Class ids and how probable each is: two (B, levels, H, W) tensors, long ids and float32 in [0, 1].

    ``argmax``: each level's softmax probability of its chosen class. ``consistent``: the chosen path's
    probability under the distribution over taxonomy paths that :func:`decode_consistent` maximises
    (softmax of the path scores); at level k, the probability of all paths through the chosen level-k
    class. Level 4's is the chosen path's own, and confidence never grows down the tree.
    """
    if decode == "argmax":
        best = [torch.softmax(level.float(), dim=1).max(dim=1) for level in logits]
        return torch.stack([b.indices for b in best], 1), torch.stack([b.values for b in best], 1)
    if paths is None:
        raise ValueError("consistent decoding needs the taxonomy's paths")
    paths, score = _path_scores(logits, paths)
    posterior = torch.softmax(score, dim=1)  # (B, paths, H, W)
    ids = rearrange(paths[posterior.argmax(dim=1)], "b h w k -> b k h w")
    confidence = []
    for k, level in enumerate(logits):
        through = posterior.new_zeros((posterior.shape[0], level.shape[1], *posterior.shape[2:])).index_add_(
            1, paths[:, k], posterior
        )
        confidence.append(through.gather(1, ids[:, k : k + 1]).squeeze(1))
    return ids, torch.stack(confidence, 1)


def hierarchy_disagreement(logits: Sequence[Tensor], taxonomy: Taxonomy) -> dict[str, float | list[float]]:
    """How often plain per-level argmax breaks the hierarchy.

    Returns:
        ``invalid_path_fraction``: share of pixels whose four argmax ids are not a path of the tree;
        ``changed_fraction``: per level, share of pixels where consistent decoding changes the argmax.
    """
    argmax = decode_argmax(logits)
    consistent = decode_consistent(logits, taxonomy.paths)
    valid = taxonomy.valid_path_mask(argmax.cpu().numpy())
    return {
        "invalid_path_fraction": float(1.0 - valid.mean()),
        "changed_fraction": [float((argmax[:, k] != consistent[:, k]).float().mean()) for k in range(4)],
    }
