import json

import numpy as np
import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import read_sample
from h2crop_core.data.stats import RunningMoments, compute_norm_stats


def test_streaming_stats_equal_numpy_on_the_full_array(synth_root):
    paths = DatasetIndex(synth_root).split_paths("train")
    stats = compute_norm_stats(paths, progress=False)
    s2 = np.stack([read_sample(p, modalities=["s2"])["s2"] for p in paths]).astype(np.float64)  # (N, 12, 10, H, W)
    enmap = np.stack([read_sample(p, modalities=["enmap"])["enmap"] for p in paths]).astype(np.float64)
    np.testing.assert_allclose(stats.s2_mean, s2.mean(axis=(0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(stats.s2_std, s2.std(axis=(0, 1, 3, 4)), rtol=1e-10)
    np.testing.assert_allclose(stats.enmap_mean, enmap.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats.enmap_std, enmap.std(axis=(0, 2, 3)), rtol=1e-10)
    assert stats.meta["n_samples"] == len(paths)
    # worker processes merge to the same numbers
    parallel = compute_norm_stats(paths, workers=2, progress=False)
    np.testing.assert_allclose(parallel.s2_std, stats.s2_std, rtol=1e-12)


def test_merging_is_stable_where_the_naive_formula_fails():
    rng = np.random.default_rng(0)
    chunks = [1e9 + rng.normal(0, 1e-3, size=(3, 5000)) for _ in range(20)]  # huge mean, tiny spread
    moments = RunningMoments()
    for chunk in chunks:
        moments.update(chunk, channel_axis=0)
    full = np.concatenate(chunks, axis=1)
    np.testing.assert_allclose(moments.std, full.std(axis=1), rtol=1e-3)
    naive = np.sqrt(np.maximum((full**2).mean(axis=1) - full.mean(axis=1) ** 2, 0))
    assert not np.allclose(naive, full.std(axis=1), rtol=1e-1)  # why Chan's merge is used
    # merge order does not matter
    left, right = RunningMoments(), RunningMoments()
    for chunk in chunks[:7]:
        left.update(chunk, 0)
    for chunk in chunks[7:]:
        right.update(chunk, 0)
    np.testing.assert_allclose(right.merge(left).mean, moments.mean, rtol=1e-15)


def test_stats_round_trip_and_normalise_training_data(synth_root, tmp_path):
    paths = DatasetIndex(synth_root).split_paths("train")
    stats = compute_norm_stats(paths, progress=False)
    again = NormStats.from_json(stats.to_json(tmp_path / "norm_stats.json"))
    np.testing.assert_array_equal(again.enmap_std, stats.enmap_std)
    values = np.stack([read_sample(p, "dec", ["s2"], stats=again)["s2"] for p in paths])
    np.testing.assert_allclose(values.mean(axis=(0, 1, 3, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(values.std(axis=(0, 1, 3, 4)), 1, atol=1e-4)


def test_published_statistics_load(shared_norm_stats):
    stats = NormStats.from_json(shared_norm_stats)
    assert len(stats.s2_mean) == 10 and len(stats.enmap_mean) == 218
    assert 3000 < stats.s2_mean.mean() < 6000


def test_bad_stats_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="h2crop stats"):
        NormStats.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"S2": {"mean": [1.0]}}))
    with pytest.raises(ValueError, match="bad.json: expected JSON with S2/EnMAP mean and std"):
        NormStats.from_json(tmp_path / "bad.json")
    payload = {k: {"mean": [0.0, 0.0], "std": [1.0, 0.0]} for k in ("S2", "EnMAP")}
    (tmp_path / "zero.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="non-positive"):
        NormStats.from_json(tmp_path / "zero.json")
