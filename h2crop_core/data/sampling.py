"""Which training tiles an epoch draws, and how often: uniform (the benchmark's) or by labelled pixels.

A user's field survey labels a few parcels here and there: most tiles hold a handful of labelled pixels or
none, and an epoch of uniformly drawn tiles is mostly pixels that add nothing to the loss (which averages over
labelled pixels only). The ``labelled`` plan draws each tile in proportion to its labelled-pixel count (every
labelled tile at least once) and leaves unlabelled tiles out. Drawn so, a tile's pixels would weigh in
proportion to its count (drawn k times as often, each time all of them): on the small-data benchmark that bias
held the ``pixel-spectrum`` variant at 0.56 level-4 OA (0.65 weighted). :func:`draw_weights` undoes it: each
draw's pixels weigh 1/copies of its tile, over the mean labelled pixels of a tile, so that the loss averaged
over an epoch's batches is the mean over every labelled pixel once (not a mean within each batch, where the
weights would act only relative to batch-mates). A uniform plan draws every tile equally often (whole
multiples of the tiles), so it needs no weights. A plan is a list of paths in which tiles repeat: it works unchanged with Ray Data's sharding and the
readers, and an epoch can hold more draws than there are tiles (the small recipe's ``epoch_samples``), so that
validation and checkpoints come every few dozen steps.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from h2crop_core.data.reader import SampleError, find_dataset, sample_name
from h2crop_core.taxonomy import UNLABELLED

#: ``auto`` draws by labelled pixels when fewer than this fraction of the probed pixels is labelled
SPARSE_FRACTION = 0.5
#: tiles read to tell a sparsely labelled set from a densely labelled one (the benchmark: all labelled)
PROBES = 32


def labelled_pixels(path: str | Path) -> tuple[int, ...]:
    """(labelled pixels, pixels, labelled pixels at level 1, .., 4) of one sample: the first counts a pixel
    labelled at any level."""
    with h5py.File(path, "r") as handle:
        _, node = find_dataset(handle, "label")
        if node is None:
            raise SampleError(path, "label", "a (4, H, W) label dataset", "no label key")
        label = node[()]
    labelled = label != UNLABELLED
    return int(labelled.any(axis=0).sum()), int(np.prod(label.shape[1:])), *map(int, labelled.sum(axis=(1, 2)))


def count_labelled(paths: Sequence[str | Path], *, threads: int = 4, progress: bool = False) -> np.ndarray:
    """(N, 6) per tile: labelled pixels (any level), pixels, and labelled pixels at levels 1..4 (only the
    label arrays are read, in threads)."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=threads) as pool:
        counts = list(
            tqdm(
                pool.map(labelled_pixels, paths),
                total=len(paths),
                desc="labelled pixels",
                unit="tile",
                disable=not progress,
                dynamic_ncols=True,
                leave=False,
            )
        )
    return np.array(counts, dtype=np.int64).reshape(-1, 6)


def probe_paths(paths: Sequence[str | Path], probes: int = PROBES) -> list[str | Path]:
    """Up to ``probes`` tiles spread evenly over ``paths``."""
    if len(paths) <= probes:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, probes).round().astype(int)]


def is_sparse(counts: np.ndarray) -> bool:
    """Whether under :data:`SPARSE_FRACTION` of the counted pixels is labelled."""
    return bool(counts[:, 0].sum() < SPARSE_FRACTION * counts[:, 1].sum())


def proportional_copies(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer copies of each item, in proportion to ``weights`` and summing to ``total`` (largest
    remainders get the last copies); items of weight 0 get none."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("no item has a positive weight")
    share = weights / weights.sum() * total
    copies = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - copies), kind="stable")
    copies[order[: total - int(copies.sum())]] += 1
    return copies


def epoch_plan(paths: Sequence[str], size: int = 0, counts: np.ndarray | None = None) -> list[str]:
    """The tiles of one epoch: with ``counts`` (from :func:`count_labelled`) ``max(size, len(paths))`` draws in
    proportion to their labelled pixels; else each tile equally often, as many whole times as reach ``size``
    (the paths themselves when ``size`` is at most their number)."""
    if counts is None:
        return list(paths) * max(1, math.ceil(size / max(1, len(paths))))
    size = max(size, len(paths))
    labelled = counts[:, 0] > 0
    copies = proportional_copies(counts[:, 0], max(0, size - int(labelled.sum()))) + labelled  # none left out
    return [path for path, n in zip(paths, copies) for _ in range(n)]


def draw_weights(plan: Sequence[str], counts: dict[str, Sequence[int]]) -> dict[str, list[float]] | None:
    """Per sample name of a plan, the weight of its labelled pixels at each level (four numbers): the mean
    copies of a tile over this tile's copies, over the mean labelled pixels of a tile at that level. A
    batch's loss, the weighted sum of its pixel losses over its size, then averages over an epoch to the mean
    over every labelled pixel once (:func:`~h2crop_core.models.loss.hierarchical_loss`). None when every
    tile is drawn equally often (the benchmark's plan): the loss is then the plain mean over labelled pixels.

    Args:
        plan: the epoch's draws (paths; tiles repeat).
        counts: labelled pixels at levels 1..4 per sample name (the last four columns of :func:`count_labelled`).
    """
    copies = Counter(sample_name(path) for path in plan)
    if len(set(copies.values())) <= 1:
        return None
    mean = len(plan) / len(copies)
    per_level = np.array([counts[name] for name in copies], dtype=np.float64).mean(axis=0)  # a tile's, drawn once
    scale = np.divide(1.0, per_level, out=np.zeros_like(per_level), where=per_level > 0)
    return {name: list(map(float, mean / n * scale)) for name, n in copies.items()}


def describe_plan(paths: Sequence[str], plan: Sequence[str], counts: np.ndarray | None) -> str:
    """One line for the console: how the epoch draws its tiles."""
    if counts is None:
        repeats = f", each {len(plan) // len(paths)}x" if len(plan) > len(paths) else ""
        return f"sampling uniform: {len(plan)} draws of {len(paths)} training tiles an epoch{repeats}"
    fraction = counts[:, 0].sum() / max(1, counts[:, 1].sum())
    empty = int((counts[:, 0] == 0).sum())
    return (
        f"sampling labelled: {fraction:.1%} of training pixels labelled; {len(plan)} draws an epoch in proportion to each tile's "
        f"labelled pixels, each weighted 1/its copies: every labelled pixel counts once an epoch ({empty} of "
        f"{len(paths)} tiles without labels left out; --sampling uniform for the benchmark's)"
    )
