"""Per-band normalisation statistics over a split: one streaming, numerically stable pass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h2crop_core.data.index import DatasetError, DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import SampleReader, infer_dataset_spec
from h2crop_core.data.schema import Sample, SampleSpec
from h2crop_core.files import write_figure_atomic
from h2crop_core.parallel import map_with_progress


@dataclass
class RunningMoments:
    """Per-channel count, mean and sum of squared deviations (M2), merged with Chan et al.'s formula.

    Each update computes the batch's own mean and M2 in float64 before merging, so no large sums of
    squares are ever subtracted (the naive ``E[x²] − E[x]²`` loses all precision on raw int16 values in
    the thousands over billions of pixels).
    """

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def update(self, values: np.ndarray, channel_axis: int) -> None:
        """Add ``values``; every axis but ``channel_axis`` is reduced."""
        moved = np.moveaxis(np.asarray(values), channel_axis, 0)
        flat = moved.reshape(moved.shape[0], -1).astype(np.float64)
        n = flat.shape[1]
        if n == 0:
            return
        mean = flat.mean(axis=1)
        flat -= mean[:, None]
        m2 = np.einsum("ij,ij->i", flat, flat)
        self.merge(RunningMoments(n, mean, m2))

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Fold ``other`` into ``self`` (associative, so per-worker partials can be combined in any order)."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return self
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        return self

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        return np.sqrt(self.m2 / self.count)


def sample_moments(sample: Sample) -> tuple[RunningMoments, RunningMoments]:
    """S2 and EnMAP moments of one raw sample (S2 over all its frames)."""
    s2, enmap = RunningMoments(), RunningMoments()
    s2.update(sample["s2"], channel_axis=1)
    enmap.update(sample["enmap"], channel_axis=0)
    return s2, enmap


def moments_to_stats(s2: RunningMoments, enmap: RunningMoments, meta: dict | None = None) -> NormStats:
    """Statistics from merged moments (``meta`` says what they were computed over)."""
    if s2.count == 0 or enmap.count == 0:
        raise ValueError("no samples were read; cannot compute normalisation statistics")
    return NormStats(s2.mean, s2.std, enmap.mean, enmap.std, meta=meta or {})


@dataclass(frozen=True)
class _MomentsOfFile:
    """Picklable per-file task for :func:`compute_norm_stats`."""

    spec: SampleSpec

    def __call__(self, path: Path) -> tuple[RunningMoments, RunningMoments]:
        reader = SampleReader(self.spec.months, ("s2", "enmap"), spec=self.spec)
        return sample_moments(reader.read(path))


def compute_norm_stats(
    paths: list[Path],
    *,
    workers: int = 1,
    progress: bool = True,
    spec: SampleSpec | None = None,
    meta: dict | None = None,
) -> NormStats:
    """Per-band mean/std of S2 (all its months) and EnMAP over ``paths`` in one streaming pass.

    Memory stays at one sample per worker; per-file moments are merged exactly (Chan et al.).

    Args:
        paths: the sample files.
        workers: reader processes.
        spec: the files' layout; by default the one most of them have
            (:func:`~h2crop_core.data.reader.infer_dataset_spec`).
        meta: more entries for the statistics' ``meta``.

    Raises:
        DatasetError: ``paths`` is empty.
        SampleError: a file is unreadable or does not have the layout.
    """
    if not paths:
        raise DatasetError("no sample files to compute normalisation statistics over")
    s2, enmap = RunningMoments(), RunningMoments()
    task = _MomentsOfFile(spec or infer_dataset_spec(paths))
    for s2_part, enmap_part in map_with_progress(task, paths, workers=workers, desc="stats", progress=progress):
        s2.merge(s2_part)
        enmap.merge(enmap_part)
    info = {"n_samples": len(paths), "s2_values_per_band": s2.count, "enmap_values_per_band": enmap.count}
    return moments_to_stats(s2, enmap, meta={**info, **(meta or {})})


def ensure_norm_stats(
    index: DatasetIndex, spec: SampleSpec, *, workers: int | None = None, progress: bool = True
) -> NormStats:
    """The root's ``norm_stats.json``, computed over the training split (and written) first if it is missing,
    or if the training split changed since it was computed (its ``train_fingerprint``; statistics without
    one, such as the published ones, are used as they are)."""
    current = index.fingerprint(("train",))
    stored = NormStats.from_json(index.norm_stats_path) if index.norm_stats_path.is_file() else None
    if stored is not None and stored.meta.get("train_fingerprint", current) != current:
        print(
            f"[h2crop] the training split changed since {index.norm_stats_path} was computed: recomputing it",
            flush=True,
        )
        stored = None
    if stored is None:
        if not index.norm_stats_path.is_file():
            print(f"[h2crop] {index.norm_stats_path} not found: computing it over the training split", flush=True)
        paths = index.split_paths("train")
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        meta = {"split": "train", "dataset_fingerprint": index.fingerprint(), "train_fingerprint": current}
        compute_norm_stats(paths, workers=workers, spec=spec, progress=progress, meta=meta).to_json(
            index.norm_stats_path
        )
    return NormStats.from_json(index.norm_stats_path)


def plot_norm_stats(stats: NormStats, path: str | Path, reference: NormStats | None = None) -> Path:
    """Per-band mean ± std of S2 and EnMAP as a PNG (optionally beside reference statistics, e.g. the
    published ones): a glance shows a wrong band order, a unit change or broken water-vapour bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 3]})
    for ax, prefix, title in ((axes[0], "s2", "Sentinel-2 bands"), (axes[1], "enmap", "EnMAP bands")):
        for source, label, colour in ((stats, "this dataset", "tab:blue"), (reference, "reference", "tab:grey")):
            if source is None:
                continue
            mean, std = getattr(source, f"{prefix}_mean"), getattr(source, f"{prefix}_std")
            bands = range(1, len(mean) + 1)
            ax.plot(bands, mean, color=colour, label=f"{label} mean")
            ax.fill_between(bands, mean - std, mean + std, color=colour, alpha=0.2, label=f"{label} ± std")
        ax.set_title(title)
        ax.set_xlabel("band")
        ax.set_ylabel("raw value")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        return write_figure_atomic(path, fig, dpi=90)
    finally:
        plt.close(fig)
