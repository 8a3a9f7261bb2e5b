"""The per-pixel baseline's pieces: features, the stratified pixel sample, fitting and predicting."""

import json

import h5py
import numpy as np
import pytest

from h2crop_core import baseline as baseline_module
from h2crop_core.baseline import (
    UNSCORED_FILL,
    PixelBaseline,
    collect_pixels,
    features_reader,
    keep_probabilities,
    pixel_features,
    predict_split,
    prediction_pixels,
)
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import infer_dataset_spec
from h2crop_core.evaluation import score_predictions
from h2crop_core.taxonomy import UNLABELLED, load_taxonomy


def _corner(sample: dict, size: int) -> dict:
    """The top-left ``size`` x ``size`` S2 pixels of a sample (and their EnMAP pixels)."""
    return {
        **sample,
        "s2": sample["s2"][..., :size, :size],
        "label": sample["label"][:, :size, :size],
        "enmap": sample["enmap"][:, : size // 3, : size // 3],
    }


def test_features_are_the_pixels_s2_series_and_its_enmap_pixels_spectrum():
    rng = np.random.default_rng(0)
    sample = {
        "s2": rng.integers(0, 9000, (6, 10, 6, 6), dtype=np.int16),
        "enmap": rng.integers(0, 9000, (218, 2, 2), dtype=np.int16),
    }
    features = pixel_features(sample)
    assert features.shape == (36, 6 * 10 + 218) and features.dtype == np.float32
    row, col = 4, 2  # S2 pixel (4, 2) lies in EnMAP pixel (1, 0)
    pixel = features[row * 6 + col]
    assert np.array_equal(pixel[:60], sample["s2"][:, :, row, col].reshape(-1))
    assert np.array_equal(pixel[60:], sample["enmap"][:, 1, 0])
    chosen = np.array([35, 0, row * 6 + col])
    assert np.array_equal(pixel_features(sample, chosen), features[chosen])  # gathering only some pixels


def test_keep_probabilities_cap_common_classes_and_keep_rare_ones_whole():
    counts = np.zeros(256, dtype=np.int64)
    counts[[1, 2, 3]] = [10_000, 1_000, 20]
    keep = keep_probabilities(counts, 2_020)
    kept = keep * counts
    assert kept[3] == pytest.approx(20)  # rare: whole
    assert kept[1] == pytest.approx(kept[2], rel=1e-3) == pytest.approx(1_000, rel=1e-3)  # common: one cap
    assert kept.sum() == pytest.approx(2_020, rel=1e-3)
    assert np.all(keep_probabilities(counts, 50_000)[counts > 0] == 1)


def test_collect_pixels_bounds_the_sample_and_takes_only_labelled_pixels(synth_root, synth_taxonomy):
    paths = DatasetIndex(synth_root).split_paths("train")
    reader = features_reader("jun", synth_taxonomy, infer_dataset_spec(paths))
    pixels = collect_pixels(paths, reader, 3_000, seed=1, progress=False)
    assert 0 < len(pixels.labels) <= 3_000 and pixels.features.shape == (len(pixels.labels), 60 + 218)
    assert pixels.labelled > 3_000  # the split held more: it was sampled
    assert np.all((pixels.labels != UNLABELLED).any(axis=1))
    again = collect_pixels(paths, reader, 3_000, seed=1, progress=False)
    assert np.array_equal(again.labels, pixels.labels)  # seeded


@pytest.mark.parametrize("model", ["rf", "hgb", "svm"])
def test_baseline_learns_the_training_pixels(model, synth_root, synth_taxonomy):
    paths = DatasetIndex(synth_root).split_paths("train")
    reader = features_reader("jun", synth_taxonomy, infer_dataset_spec(paths))
    pixels = collect_pixels(paths[:1], reader, 400, progress=False)
    baseline = PixelBaseline(model, "levels", synth_taxonomy).fit(pixels, threads=2, progress=False)
    sample = _corner(reader.read(paths[0]), 48)  # a corner: prediction costs per pixel
    prediction = baseline.predict(sample)
    assert prediction.shape == (4, *sample["label"].shape[1:]) and prediction.dtype == np.uint8
    labelled = sample["label"][0] != UNLABELLED
    accuracy = (prediction[0][labelled] == sample["label"][0][labelled]).mean()
    assert accuracy > 0.6, accuracy  # level 1 of pixels it saw the like of


def test_leaf_target_predicts_consistent_paths(synth_root, synth_taxonomy):
    paths = DatasetIndex(synth_root).split_paths("train")
    reader = features_reader("jun", synth_taxonomy, infer_dataset_spec(paths))
    baseline = PixelBaseline("rf", "leaf", synth_taxonomy).fit(
        collect_pixels(paths[:2], reader, 1_000, progress=False), threads=2, progress=False
    )
    assert len(baseline.classifiers) == 1
    prediction = baseline.predict(_corner(reader.read(paths[1]), 48))
    assert synth_taxonomy.valid_path_mask(prediction).all()


class CountingClassifier:
    """A fitted classifier that records how many rows each ``predict`` call is given."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.rows.append(len(features))
        return self.inner.predict(features)


def _keep_labels(label: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``label`` with about ``fraction`` of its pixels kept, the others unlabelled (255) at every level."""
    label = label.copy()
    label[:, np.random.default_rng(seed).random(label.shape[1:]) >= fraction] = UNLABELLED
    return label


def test_scored_prediction_classifies_only_the_labelled_pixels(synth_root, synth_taxonomy):
    paths = DatasetIndex(synth_root).split_paths("train")
    reader = features_reader("jun", synth_taxonomy, infer_dataset_spec(paths))
    baseline = PixelBaseline("svm", "levels", synth_taxonomy).fit(
        collect_pixels(paths[:1], reader, 400, progress=False), progress=False
    )
    sample = reader.read(paths[1])
    sample["label"] = _keep_labels(sample["label"], 0.1, seed=0)  # a 192-px tile, ~10% labelled
    labelled = (sample["label"] != UNLABELLED).any(axis=0)
    baseline.classifiers = [CountingClassifier(c) for c in baseline.classifiers]
    scored = baseline.predict(sample)
    for classifier in baseline.classifiers:
        assert sum(classifier.rows) == labelled.sum() <= 0.11 * labelled.size
    assert np.all(scored[:, ~labelled] == UNSCORED_FILL)
    baseline.classifiers = [CountingClassifier(c.inner) for c in baseline.classifiers]
    full = baseline.predict(sample, "all")
    for classifier in baseline.classifiers:
        assert sum(classifier.rows) == labelled.size and max(classifier.rows) <= baseline_module.PREDICT_BATCH
    assert np.array_equal(scored[:, labelled], full[:, labelled])  # the same model, the same classes
    sample["label"][...] = UNLABELLED  # no labelled pixel: nothing to classify
    baseline.classifiers = [CountingClassifier(c.inner) for c in baseline.classifiers]
    assert np.all(baseline.predict(sample) == UNSCORED_FILL)
    assert all(not classifier.rows for classifier in baseline.classifiers)
    with pytest.raises(ValueError, match="unknown prediction mode"):
        prediction_pixels(sample, "labelled")


@pytest.mark.parametrize("model,target", [("svm", "levels"), ("rf", "leaf")])
def test_scored_and_all_predictions_score_the_same(model, target, writable_root, tmp_path, monkeypatch):
    index = DatasetIndex(writable_root)
    taxonomy = load_taxonomy(writable_root)
    for path in index.split_paths("test"):  # ~10% labelled test tiles, as in a real scene
        with h5py.File(path, "r+") as handle:
            handle["label"][...] = _keep_labels(handle["label"][...], 0.1, seed=1)
    reader = features_reader("jun", taxonomy, infer_dataset_spec(index.split_paths("train")))
    baseline = PixelBaseline(model, target, taxonomy).fit(
        collect_pixels(index.split_paths("train"), reader, 600, progress=False), threads=2, progress=False
    )
    monkeypatch.setattr(baseline_module, "PREDICT_BATCH", 1_000)  # several batches in both modes
    results = {}
    for mode in ("scored", "all"):
        predict_split(baseline, index.split_paths("test"), reader, tmp_path / mode, mode=mode, progress=False)
        confusion = score_predictions(writable_root, "test", tmp_path / mode, taxonomy, progress=False)
        results[mode] = (confusion.state()["matrices"], confusion.compute())
    for area, matrices in results["scored"][0].items():
        for scored, full in zip(matrices, results["all"][0][area]):
            assert np.array_equal(scored, full), area
    scored, full = (results[mode][1] for mode in ("scored", "all"))
    assert sum(m.sum() for m in results["all"][0]["all"]) > 0  # something was scored
    # every metric but hierarchy consistency, which the scorer counts over every pixel, labelled or not
    assert json.dumps({**scored, "consistency": None}, sort_keys=True) == json.dumps(
        {**full, "consistency": None}, sort_keys=True
    )
    if target == "leaf":  # taxonomy paths and the background fill: consistent either way
        assert scored["consistency"] == full["consistency"] == 1.0
