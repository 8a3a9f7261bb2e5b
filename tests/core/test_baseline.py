"""The per-pixel baseline's pieces: features, the stratified pixel sample, fitting and predicting."""

import numpy as np
import pytest

from h2crop_core.baseline import PixelBaseline, collect_pixels, features_reader, keep_probabilities, pixel_features
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import infer_dataset_spec
from h2crop_core.taxonomy import UNLABELLED


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
