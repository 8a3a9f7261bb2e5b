"""Streaming hierarchical metrics with the benchmark's semantics.

Per level, a confusion matrix (rows = label, columns = prediction, int64) is updated batch by batch; label
255 (unlabelled) is ignored. Matrices merge by summing, so per-batch, per-worker and per-rank results
combine exactly. From them, per class (``c``)::

    IoU = TP / (TP + FP + FN)     precision = TP / (TP + FP)     recall = TP / (TP + FN)
    F1  = 2 · precision · recall / (precision + recall)

and per level the means over classes with undefined (NaN) values skipped, background (0) included:

* a class absent from labels and predictions: every value undefined, skipped everywhere;
* absent from labels but predicted: IoU 0 (counted), recall and F1 undefined (skipped);
* present in labels but never correctly predicted: IoU 0, F1 0 (counted). The research code (mmseg's
  ``f_score``) turns this case into 0/0 = NaN and so *skips* such classes, inflating mF1;
  ``mmseg_f1=True`` reproduces that bit for bit when comparing with published numbers.

Overall accuracy is TP summed over classes / labelled pixels. The reported summary is the mean of the four
levels. The same metrics restricted to pixels whose label differs from (``changed``) or equals
(``unchanged``) last year's crop at that level show how a model handles crop rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from h2crop_core.taxonomy import NUM_LEVELS, UNLABELLED, Taxonomy

AREAS = ("all", "changed", "unchanged")


class HierarchicalConfusion:
    """Per-level confusion matrices over all pixels and over changed / unchanged pixels, plus the counts
    behind hierarchy consistency of the predictions.

    Args:
        num_classes: classes per level including background, e.g. ``(7, 37, 83, 102)``.
        taxonomy: when given, hierarchy consistency of predictions is counted too.
        device: where the matrices live (the predictions' device avoids copies).
    """

    def __init__(
        self,
        num_classes: tuple[int, ...],
        taxonomy: Taxonomy | None = None,
        device: str | torch.device = "cpu",
        levels: tuple[int, ...] = (1, 2, 3, 4),
    ):
        all_classes = tuple(int(n) for n in num_classes)
        if len(all_classes) != NUM_LEVELS:
            raise ValueError(f"need class counts for {NUM_LEVELS} levels, got {all_classes}")
        if not levels or any(level not in range(1, NUM_LEVELS + 1) for level in levels):
            raise ValueError(f"levels must be a subset of 1..{NUM_LEVELS}, got {levels}")
        self.levels = tuple(levels)
        self.all_num_classes = all_classes
        self.num_classes = tuple(all_classes[level - 1] for level in self.levels)
        self.names = taxonomy.names if taxonomy is not None else None
        self.taxonomy = taxonomy if len(self.levels) == NUM_LEVELS else None  # consistency needs all four
        taxonomy = self.taxonomy
        self.matrices = {
            area: [torch.zeros((n, n), dtype=torch.int64, device=device) for n in self.num_classes] for area in AREAS
        }
        self.consistent_pixels = 0
        self.predicted_pixels = 0
        self.samples = 0
        self._parent_tables = None
        if taxonomy is not None:
            # child id -> parent id tables, with -1 for ids outside the taxonomy
            self._parent_tables = []
            for level in range(2, NUM_LEVELS + 1):
                table = torch.as_tensor(taxonomy.parent_map(level, level - 1).astype(np.int64), device=device)
                table[UNLABELLED] = -1
                self._parent_tables.append(table)

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, label: torch.Tensor, prior: torch.Tensor | None = None) -> None:
        """Add a batch.

        Args:
            prediction: (B, L, H, W) integer class ids for the L scored levels (or (L, H, W) for one sample).
            label: (B, 4, H, W) labels of all four levels; 255 = unlabelled (ignored).
            prior: (B, 4, H, W) last year's crops; enables the changed / unchanged areas.
        """
        prediction, label = _batched(prediction), _batched(label)
        if prediction.shape[0] != label.shape[0] or prediction.shape[2:] != label.shape[2:]:
            raise ValueError(
                f"prediction shape {tuple(prediction.shape)} does not match label shape {tuple(label.shape)}"
            )
        if prediction.shape[1] != len(self.levels) or label.shape[1] != NUM_LEVELS:
            raise ValueError(
                f"expected predictions for levels {self.levels} and labels for {NUM_LEVELS} levels on axis 1; "
                f"got {tuple(prediction.shape)} and {tuple(label.shape)}"
            )
        prior = _batched(prior) if prior is not None else None
        device = self.matrices["all"][0].device
        prediction, label = prediction.to(device=device, dtype=torch.int64), label.to(device=device, dtype=torch.int64)
        for k, n in enumerate(self.num_classes):
            level_index = self.levels[k] - 1
            pred_k, label_k = prediction[:, k], label[:, level_index]
            name = f"level{self.levels[k]}"
            out_of_range = (pred_k < 0) | (pred_k >= n)
            if out_of_range.any():
                bad = torch.unique(pred_k[out_of_range])[:8].tolist()
                raise ValueError(f"{name} predictions must be ids 0..{n - 1}; found {bad}")
            labelled = label_k != UNLABELLED
            bad_label = labelled & ((label_k < 0) | (label_k >= n))
            if bad_label.any():
                raise ValueError(
                    f"{name} labels must be ids 0..{n - 1} or 255; found {torch.unique(label_k[bad_label])[:8].tolist()}"
                )
            masks = {"all": labelled}
            if prior is not None:
                prior_k = prior[:, level_index].to(device=device, dtype=torch.int64)
                known = labelled & (prior_k != UNLABELLED)
                masks["changed"] = known & (label_k != prior_k)
                masks["unchanged"] = known & (label_k == prior_k)
            for area, mask in masks.items():
                index = label_k[mask] * n + pred_k[mask]
                self.matrices[area][k] += torch.bincount(index, minlength=n * n).reshape(n, n)
        if self._parent_tables is not None:
            valid = prediction[:, 0] < self.num_classes[0]
            for k, table in enumerate(self._parent_tables, start=1):
                valid &= table[prediction[:, k].clamp(0, 255)] == prediction[:, k - 1]
            self.consistent_pixels += int(valid.sum())
            self.predicted_pixels += valid.numel()
        self.samples += prediction.shape[0]

    def merge(self, other: HierarchicalConfusion) -> HierarchicalConfusion:
        """Add ``other``'s counts into this one (workers, ranks or batches)."""
        if other.num_classes != self.num_classes or other.levels != self.levels:
            raise ValueError(
                f"cannot merge levels {other.levels} of {other.num_classes} classes into levels {self.levels} of {self.num_classes}"
            )
        for area in AREAS:
            for mine, theirs in zip(self.matrices[area], other.matrices[area]):
                mine += theirs.to(mine.device)
        self.consistent_pixels += other.consistent_pixels
        self.predicted_pixels += other.predicted_pixels
        self.samples += other.samples
        return self

    def state(self) -> dict:
        """Plain NumPy/int state (picklable, e.g. to return from a Ray task)."""
        return {
            "num_classes": self.all_num_classes,
            "levels": self.levels,
            "matrices": {area: [m.cpu().numpy() for m in ms] for area, ms in self.matrices.items()},
            "consistent_pixels": self.consistent_pixels,
            "predicted_pixels": self.predicted_pixels,
            "samples": self.samples,
        }

    @classmethod
    def from_state(cls, state: dict, taxonomy: Taxonomy | None = None) -> HierarchicalConfusion:
        confusion = cls(state["num_classes"], taxonomy, levels=tuple(state.get("levels", (1, 2, 3, 4))))
        for area, matrices in state["matrices"].items():
            confusion.matrices[area] = [torch.as_tensor(m) for m in matrices]
        confusion.consistent_pixels = state["consistent_pixels"]
        confusion.predicted_pixels = state["predicted_pixels"]
        confusion.samples = state["samples"]
        return confusion

    def all_reduce(self) -> None:
        """Sum the counts over all ranks of the default ``torch.distributed`` process group, in place."""
        import torch.distributed as dist

        flat = torch.cat([m.flatten() for area in AREAS for m in self.matrices[area]])
        extra = torch.tensor(
            [self.consistent_pixels, self.predicted_pixels, self.samples], dtype=torch.int64, device=flat.device
        )
        flat = torch.cat([flat, extra])
        dist.all_reduce(flat)
        offset = 0
        for area in AREAS:
            for m in self.matrices[area]:
                m.copy_(flat[offset : offset + m.numel()].reshape(m.shape))
                offset += m.numel()
        self.consistent_pixels, self.predicted_pixels, self.samples = (int(v) for v in flat[offset:])

    def compute(self, *, ignore_background: bool = False, mmseg_f1: bool = False) -> dict:
        """All metrics as a nested dict (see :func:`level_metrics` and :func:`summarise`)."""
        out = {}
        for area in AREAS:
            levels = {
                f"level{level}": level_metrics(
                    m.cpu().numpy(),
                    ignore_background=ignore_background,
                    mmseg_f1=mmseg_f1,
                    names=self.names[level - 1] if self.names else None,
                )
                for level, m in zip(self.levels, self.matrices[area])
            }
            out[area] = {"levels": levels, "mean": summarise(levels)}
        out["consistency"] = self.consistent_pixels / self.predicted_pixels if self.predicted_pixels else float("nan")
        return out


def _batched(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x[None] if x.ndim == 3 else x


@dataclass(frozen=True)
class ClassScores:
    """Per-class arrays of one confusion matrix (NaN where undefined)."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # labelled pixels per class
    predicted: np.ndarray  # predicted pixels per class


def class_scores(confusion: np.ndarray, *, mmseg_f1: bool = False) -> ClassScores:
    """Per-class IoU, precision, recall, F1 and support from a (n, n) confusion matrix (rows = labels)."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (support + predicted - tp)
        precision = tp / predicted
        recall = tp / support
        f1 = 2 * precision * recall / (precision + recall)
    if not mmseg_f1:
        # a class present in the labels always counts: no correct pixel means F1 0, not "undefined"
        f1 = np.where((support > 0) & (tp == 0), 0.0, f1)
    return ClassScores(iou, precision, recall, f1, support.astype(np.int64), predicted.astype(np.int64))


def level_metrics(
    confusion: np.ndarray,
    *,
    ignore_background: bool = False,
    mmseg_f1: bool = False,
    names: tuple[str, ...] | None = None,
) -> dict:
    """Summary and per-class metrics of one level.

    Returns:
        ``{"oa", "miou", "mf1", "precision", "recall", "n_pixels", "per_class": [...]}`` with fractions in
        [0, 1] (NaN where nothing was scored).
    """
    scores = class_scores(confusion, mmseg_f1=mmseg_f1)
    keep = slice(1, None) if ignore_background else slice(None)
    labelled = scores.support[keep].sum()
    per_class = [
        {
            "id": c,
            "name": names[c] if names else str(c),
            "iou": float(scores.iou[c]),
            "precision": float(scores.precision[c]),
            "recall": float(scores.recall[c]),
            "f1": float(scores.f1[c]),
            "support": int(scores.support[c]),
        }
        for c in range(len(scores.iou))
    ]
    return {
        "oa": float(np.diag(confusion)[keep].sum() / labelled) if labelled else float("nan"),
        "miou": _nanmean(scores.iou[keep]),
        "mf1": _nanmean(scores.f1[keep]),
        "precision": _nanmean(scores.precision[keep]),
        "recall": _nanmean(scores.recall[keep]),
        "n_pixels": int(labelled),
        "per_class": per_class,
    }


def summarise(levels: dict) -> dict:
    """The benchmark's reported number: the mean of the (four) levels' summaries."""
    return {key: _nanmean(np.array([levels[name][key] for name in levels])) for key in ("oa", "miou", "mf1")}


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
