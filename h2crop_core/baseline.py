"""A per-pixel classical baseline: scikit-learn on each labelled pixel's S2 time series and EnMAP spectrum.

Every paper and tool of the field compares its deep model with a per-pixel Random Forest, SVM or gradient
boosting; on a small labelled set such a model is often hard to beat, because it sees each pixel's full
spectrum. A pixel's features are the window's S2 months (months × 10 bands) and the 218 EnMAP bands of the
EnMAP pixel it lies in (one EnMAP pixel covers 3 × 3 S2 pixels). Training pixels are a stratified sample of
the train split's labelled pixels, at most ``max_pixels``: rare leaf classes are kept whole and the common
ones capped alike (water-filling), so memory is bounded and no class is crowded out. Predictions are written
as ``<sample>.npy`` (4, H, W) uint8, the layout ``h2crop score`` reads, so they are scored by the same code
as any model. By default a tile's prediction classifies only its scored pixels (labelled at any level: the
metrics read no other), since an SVM's prediction costs per pixel; ``mode="all"`` classifies every pixel, in
batches, for full prediction maps. Every per-level metric of the two is the same; hierarchy consistency is
not (see :data:`UNSCORED_FILL`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from einops import rearrange

from h2crop_core.data.reader import SampleReader
from h2crop_core.data.schema import SampleSpec
from h2crop_core.files import write_atomic
from h2crop_core.taxonomy import NUM_LEVELS, UNLABELLED, Taxonomy

#: the classifiers: a Random Forest, histogram gradient boosting, an RBF-kernel SVM (on standardised features)
MODELS: tuple[str, ...] = ("rf", "hgb", "svm")
#: ``levels``: one model per level; ``leaf``: one level-4 model, levels 1-3 its taxonomy path (always consistent)
TARGETS: tuple[str, ...] = ("levels", "leaf")
#: training pixels when --max-pixels is not given: an SVM's fit grows with the square of its pixels
DEFAULT_MAX_PIXELS: dict[str, int] = {"rf": 200_000, "hgb": 200_000, "svm": 20_000}
#: EnMAP pixels are 30 m, S2's 10 m
ENMAP_SCALE = 3
#: which pixels of a tile a prediction classifies: ``scored``: those labelled at any level (the only ones the
#: metrics read); ``all``: every pixel (a full prediction map)
PREDICT_MODES: tuple[str, ...] = ("scored", "all")
#: pixels whose features are gathered and classified at once: bounds a prediction's memory (features of 16,384
#: pixels are ~22 MB at 12 months), whatever the tile size or mode
PREDICT_BATCH = 16_384
#: what a pixel that ``scored`` mode does not classify holds. Not 255 (nodata): the scorer
#: (HierarchicalConfusion.update) rejects ids outside 0..n-1 on every pixel, labelled or not, so 255 would
#: fail `h2crop score`; background (0) is a valid id at every level and a valid taxonomy path. The scorer counts
#: hierarchy consistency over every pixel, so with ``scored`` these filled pixels count as consistent.
UNSCORED_FILL = 0


def make_classifier(model: str, seed: int, threads: int):
    """The scikit-learn estimator for ``model`` (settings the literature uses as defaults)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if model == "rf":
        return RandomForestClassifier(n_estimators=200, n_jobs=threads, random_state=seed)
    if model == "hgb":
        return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, early_stopping=False, random_state=seed)
    if model == "svm":
        return make_pipeline(
            StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale", cache_size=1000, random_state=seed)
        )
    raise ValueError(f"unknown baseline model {model!r}; expected one of {MODELS}")


def pixel_features(sample: dict, pixels: np.ndarray | None = None) -> np.ndarray:
    """(N, months·10 + EnMAP bands) float32 features of the ``pixels`` (flat row-major indices; default:
    every pixel of the sample, in order). Only the pixels asked for are gathered: training reads a few per tile."""
    height, width = sample["s2"].shape[-2:]
    pixels = np.arange(height * width) if pixels is None else np.asarray(pixels)
    rows, cols = np.divmod(pixels, width)
    # gathered before the rearrange, so a batch of a few pixels does not copy the whole tile
    s2 = rearrange(sample["s2"][..., rows, cols], "t c n -> n (t c)")
    enmap = rearrange(sample["enmap"][:, rows // ENMAP_SCALE, cols // ENMAP_SCALE], "c n -> n c")
    return np.concatenate([s2, enmap], axis=1, dtype=np.float32)


def strata(label: np.ndarray) -> np.ndarray:
    """A pixel's stratum: its level-4 class, or 255 where only coarser levels are labelled (flattened)."""
    return label[NUM_LEVELS - 1].reshape(-1)


def labelled_mask(label: np.ndarray) -> np.ndarray:
    """Flattened: whether a pixel is labelled at any level (the pixels that are trained on and scored)."""
    return (label != UNLABELLED).any(axis=0).reshape(-1)


def prediction_pixels(sample: dict, mode: str) -> np.ndarray:
    """Flat row-major indices of the pixels a tile's prediction classifies: the one place that decides it.

    Args:
        sample: a sample with ``s2`` (for the tile size) and, for ``scored``, ``label`` (4, H, W).
        mode: ``scored``: the pixels labelled at any level. Every level is scored, and each level's metrics
            (h2crop_core/metrics.py) read only its labelled pixels, so no metric reads any other pixel;
            a pixel labelled at some level gets all four levels predicted. ``all``: every pixel.

    Returns:
        Increasing flat indices into the (H·W) pixels.
    """
    if mode == "scored":
        return np.flatnonzero(labelled_mask(sample["label"]))
    if mode == "all":
        height, width = sample["s2"].shape[-2:]
        return np.arange(height * width)
    raise ValueError(f"unknown prediction mode {mode!r}; expected one of {PREDICT_MODES}")


def keep_probabilities(counts: np.ndarray, max_pixels: int) -> np.ndarray:
    """Per stratum, the probability of keeping a pixel so that about ``max_pixels`` are kept in all: every
    stratum keeps ``min(count, cap)`` with one cap for all (water-filling), so rare classes stay whole."""
    total = int(counts.sum())
    if total <= max_pixels:
        return np.ones(len(counts))
    low, high = 0.0, float(counts.max())
    for _ in range(60):  # bisection on the cap
        cap = (low + high) / 2
        low, high = (cap, high) if np.minimum(counts, cap).sum() < max_pixels else (low, cap)
    return np.where(counts > 0, np.minimum(counts, high) / np.maximum(counts, 1), 0.0)


@dataclass
class PixelSet:
    """Training pixels: features (N, F), labels (N, 4), and where they came from."""

    features: np.ndarray
    labels: np.ndarray
    tiles: int
    labelled: int  #: labelled pixels in the split, before sampling
    per_level: list[int] = field(default_factory=list)  #: training pixels labelled at each level


def collect_pixels(
    paths: Sequence[Path], reader: SampleReader, max_pixels: int, *, seed: int = 0, progress: bool = True
) -> PixelSet:
    """A stratified sample of at most ``max_pixels`` labelled pixels of ``paths`` (two passes: the labels,
    to count the strata, then the tiles that hold chosen pixels)."""
    from tqdm.auto import tqdm

    label_reader = SampleReader(reader.window, ("label",), reader.taxonomy, spec=reader.spec)
    counts, per_tile = np.zeros(256, dtype=np.int64), []
    for path in tqdm(
        paths, desc="count labelled pixels", unit="tile", disable=not progress, dynamic_ncols=True, leave=False
    ):
        label = label_reader.read(path)["label"]
        tile_counts = np.bincount(strata(label)[labelled_mask(label)], minlength=256)
        counts += tile_counts
        per_tile.append(tile_counts.sum())
    keep = keep_probabilities(counts, max_pixels)
    rng = np.random.default_rng(seed)
    features, labels = [], []
    chosen_paths = [p for p, n in zip(paths, per_tile) if n]
    for path in tqdm(chosen_paths, desc="read training pixels", unit="tile", disable=not progress, dynamic_ncols=True):
        sample = reader.read(path)
        candidates = np.flatnonzero(labelled_mask(sample["label"]))
        chosen = candidates[rng.random(len(candidates)) < keep[strata(sample["label"])[candidates]]]
        if chosen.size:
            features.append(pixel_features(sample, chosen))
            labels.append(rearrange(sample["label"], "l h w -> (h w) l")[chosen])
    if not features:
        return PixelSet(
            np.zeros((0, 0), np.float32), np.zeros((0, NUM_LEVELS), np.uint8), len(paths), 0, [0] * NUM_LEVELS
        )
    stacked_labels = np.concatenate(labels)
    if len(stacked_labels) > max_pixels:  # the draw is random: trim the few over the budget
        order = np.sort(rng.permutation(len(stacked_labels))[:max_pixels])
        features, stacked_labels = [np.concatenate(features)[order]], stacked_labels[order]
    per_level = [int((stacked_labels[:, k] != UNLABELLED).sum()) for k in range(NUM_LEVELS)]
    return PixelSet(np.concatenate(features), stacked_labels, len(paths), int(counts.sum()), per_level)


class Constant:
    """What a level with a single labelled class (or none) predicts: that class (or background)."""

    def __init__(self, value: int):
        self.value = value

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), self.value, dtype=np.int64)


@dataclass
class PixelBaseline:
    """Fitted per-pixel classifiers: one per level, or one for the leaf (``target="leaf"``)."""

    model: str
    target: str
    taxonomy: Taxonomy
    classifiers: list = field(default_factory=list)
    fit_seconds: float = 0.0

    def fit(self, pixels: PixelSet, *, seed: int = 0, threads: int = -1, progress: bool = True) -> PixelBaseline:
        from tqdm.auto import tqdm

        started = time.perf_counter()
        levels = [NUM_LEVELS - 1] if self.target == "leaf" else list(range(NUM_LEVELS))
        self.classifiers = []
        for k in tqdm(
            levels, desc=f"fit {self.model}", unit="level", disable=not progress, dynamic_ncols=True, leave=False
        ):
            known = pixels.labels[:, k] != UNLABELLED
            classes = np.unique(pixels.labels[known, k])
            if len(classes) < 2:
                self.classifiers.append(Constant(int(classes[0]) if len(classes) else 0))
                continue
            classifier = make_classifier(self.model, seed, threads)
            classifier.fit(pixels.features[known], pixels.labels[known, k])
            self.classifiers.append(classifier)
        self.fit_seconds = time.perf_counter() - started
        return self

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """(4, N) uint8 class ids of N pixels' features (N ≥ 1): each level's model, or the leaf's path."""
        if self.target == "leaf":
            return self.taxonomy.paths[self.classifiers[0].predict(features)].T.astype(np.uint8)
        return np.stack([classifier.predict(features) for classifier in self.classifiers]).astype(np.uint8)

    def predict(self, sample: dict, mode: str = "scored") -> np.ndarray:
        """(4, H, W) uint8 class ids of ``sample``'s pixels.

        Args:
            sample: ``s2``, ``enmap`` and (for ``scored``) ``label``, as :func:`features_reader` reads them.
            mode: which pixels are classified (:func:`prediction_pixels`): ``scored`` (the labelled ones; the
                others hold :data:`UNSCORED_FILL`) or ``all``. Either way in batches of :data:`PREDICT_BATCH`.
        """
        height, width = sample["s2"].shape[-2:]
        pixels = prediction_pixels(sample, mode)
        prediction = np.full((NUM_LEVELS, height * width), UNSCORED_FILL, dtype=np.uint8)
        for start in range(0, len(pixels), PREDICT_BATCH):  # no batch at all for a tile with no labelled pixel
            batch = pixels[start : start + PREDICT_BATCH]
            prediction[:, batch] = self.predict_features(pixel_features(sample, batch))
        return prediction.reshape(NUM_LEVELS, height, width)


def predict_split(
    baseline: PixelBaseline,
    paths: Sequence[Path],
    reader: SampleReader,
    out_dir: Path,
    *,
    mode: str = "scored",
    progress: bool = True,
) -> float:
    """Write ``<out_dir>/<sample>.npy`` for every path (atomically, one by one); returns the seconds taken.

    Args:
        mode: which pixels are classified (:func:`prediction_pixels`): ``scored`` or ``all``.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    for path in tqdm(paths, desc=f"predict {out_dir.name}", unit="tile", disable=not progress, dynamic_ncols=True):
        sample = reader.read(path)
        prediction = baseline.predict(sample, mode)
        write_atomic(Path(out_dir) / f"{sample['name']}.npy", lambda file, p=prediction: np.save(file, p))
    return time.perf_counter() - started


def features_reader(window: str | int, taxonomy: Taxonomy, spec: SampleSpec) -> SampleReader:
    """Reads what the baseline needs: the window's S2 months, EnMAP and labels (as stored, no normalising:
    the trees do not need it and the SVM standardises its own features)."""
    return SampleReader(window, ("s2", "enmap", "label"), taxonomy, spec=spec)
