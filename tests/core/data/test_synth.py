import json

import h5py
import numpy as np
import pytest
import rasterio

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import read_sample
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import SyntheticWorld, generate_taxonomy, synthesize_dataset
from h2crop_core.data.validate import validate_dataset


def _samples(root):
    return [read_sample(p) for p in DatasetIndex(root).all_paths()]


def test_layout_keys_dtypes_and_shapes_match_the_benchmark(synth_root, synth_taxonomy):
    index = DatasetIndex(synth_root)
    assert (synth_root / "cascade_labels.csv").is_file()
    sizes = {split: len(index.split_names(split)) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 12 and min(sizes.values()) >= 1
    with h5py.File(index.all_paths()[0]) as handle:
        layout = {key: (handle[key].shape, handle[key].dtype.str) for key in handle}
    assert layout == {
        "S2_data": ((12, 10, 192, 192), "<i2"),
        "EnMAP_data": ((218, 64, 64), "<i2"),
        "label": ((4, 192, 192), "|u1"),
        "priors": ((4, 192, 192), "|u1"),
    }
    report = validate_dataset(synth_root, taxonomy=synth_taxonomy, progress=False)
    assert report.ok and report.good == 12
    # names follow the benchmark's pattern: acquisition time, running number, offsets, MGRS tile
    assert all(len(p.stem.split("_")) == 5 and p.stem.split("_")[-1].startswith("T") for p in index.all_paths())


def test_generation_is_deterministic(tmp_path):
    a = synthesize_dataset(tmp_path / "a", 2, seed=9, region_size=None, progress=False)
    b = synthesize_dataset(tmp_path / "b", 2, seed=9, region_size=None, progress=False)
    c = synthesize_dataset(tmp_path / "c", 2, seed=10, region_size=None, progress=False)
    assert a.splits == b.splits
    sa, sb, sc = _samples(a.root), _samples(b.root), _samples(c.root)
    for x, y in zip(sa, sb):
        for key in ("s2", "enmap", "label", "prior"):
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(sa[0]["label"], sc[0]["label"])


def test_a_given_taxonomy_is_used(tmp_path, shared_taxonomy_csv):
    from h2crop_core.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_csv(shared_taxonomy_csv)
    result = synthesize_dataset(tmp_path / "d", 2, taxonomy=taxonomy, region_size=None, progress=False)
    assert Taxonomy.from_csv(result.root / "cascade_labels.csv").names == taxonomy.names
    for sample in _samples(result.root):
        assert taxonomy.consistency(sample["label"]) == 1.0 and taxonomy.consistency(sample["prior"]) == 1.0


def test_parcels_classes_and_priors_behave_like_the_benchmark(synth_root, synth_taxonomy):
    samples = _samples(synth_root)
    labels = np.stack([s["label"] for s in samples])
    priors = np.stack([s["prior"] for s in samples])
    # background between parcels and a few unlabelled parcels
    background = (labels[:, 0] == 0).mean()
    assert 0.05 < background < 0.4
    assert 0 < (labels[:, 0] == 255).mean() < 0.1
    # labels and priors are valid taxonomy paths
    assert synth_taxonomy.consistency(labels) == 1.0 and synth_taxonomy.consistency(priors) == 1.0
    # long tail: the most frequent crop covers far more than the median one
    crop = (labels[:, 3] > 0) & (labels[:, 3] != 255)
    counts = np.bincount(labels[:, 3][crop], minlength=102)[1:]
    present = counts[counts > 0]
    assert present.max() > 10 * np.median(present)
    # rotation: most crop parcels change at level 4, some keep last year's crop, level 1 changes rarely
    unchanged4 = (labels[:, 3] == priors[:, 3])[crop].mean()
    unchanged1 = (labels[:, 0] == priors[:, 0])[crop].mean()
    assert 0.1 < unchanged4 < 0.6 and unchanged1 > unchanged4


def _nearest_centroid_f1(samples, level, months, with_enmap, train=8, per_sample=3000, seed=0):
    rng = np.random.default_rng(seed)
    features, targets = [], []
    for sample in samples:
        pick = rng.choice(192 * 192, per_sample, replace=False)
        parts = [sample["s2"][:months].reshape(-1, 192 * 192).T[pick]]
        if with_enmap:
            enmap = np.repeat(np.repeat(sample["enmap"], 3, 1), 3, 2)
            parts.append(enmap.reshape(218, -1).T[pick])
        features.append(np.concatenate(parts, 1).astype(np.float64))
        targets.append(sample["label"][level].ravel()[pick])
    x_train, y_train = np.concatenate(features[:train]), np.concatenate(targets[:train])
    x_test, y_test = np.concatenate(features[train:]), np.concatenate(targets[train:])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = np.array([c for c in np.unique(y_train) if c != 255])
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    keep = np.isin(y_test, classes)
    distances = (x_test[keep] ** 2).sum(1)[:, None] - 2 * x_test[keep] @ centroids.T + (centroids**2).sum(1)
    predicted, truth = classes[distances.argmin(1)], y_test[keep]
    f1 = [
        2 * ((predicted == c) & (truth == c)).sum() / ((predicted == c).sum() + (truth == c).sum())
        for c in np.unique(truth)
    ]
    return float(np.mean(f1))


def test_the_science_early_windows_and_hyperspectral_help(synth_root):
    """A nearest-centroid classifier on pixels: late windows separate more fine classes than early ones,
    coarse levels are easier than fine ones, and EnMAP adds what S2 misses at the fine levels."""
    samples = _samples(synth_root)
    jun4 = _nearest_centroid_f1(samples, 3, 6, False)
    dec4 = _nearest_centroid_f1(samples, 3, 12, False)
    jun4_h = _nearest_centroid_f1(samples, 3, 6, True)
    jun1 = _nearest_centroid_f1(samples, 0, 6, False)
    assert dec4 > jun4 + 0.1
    assert jun4_h > jun4 + 0.1
    assert jun1 > jun4 + 0.2


def test_s2_confused_siblings_differ_in_enmap_fine_features(synth_taxonomy):
    world = SyntheticWorld.create(synth_taxonomy, seed=3)
    paths = synth_taxonomy.paths
    confused = np.flatnonzero(world.s2_confused)
    assert 0.1 * len(paths) < len(confused) < 0.9 * len(paths)
    for faint in (True, False):
        gaps_s2, gaps_enmap = [], []
        for k, parent in {(level, p) for level in (2, 3) for p in np.unique(paths[1:, level - 1])}:
            if ((k, parent) in world.faint_groups) != faint:
                continue
            children = np.unique(paths[1:, k][paths[1:, k - 1] == parent])
            if len(children) < 2:
                continue
            # one leaf under each of two sibling nodes: they differ from level k+1 down
            a = np.flatnonzero(paths[:, k] == children[0])[0]
            b = np.flatnonzero(paths[:, k] == children[1])[0]
            gaps_s2.append(np.abs(world.s2_signature[a] - world.s2_signature[b]).max())
            gaps_enmap.append(np.abs(world.enmap_signature[a] - world.enmap_signature[b]).max())
        if faint:
            faint_s2, faint_enmap = np.median(gaps_s2), np.median(gaps_enmap)
        else:
            distinct_s2 = np.median(gaps_s2)
    assert faint_s2 < 0.5 * distinct_s2  # faint groups look alike in S2 ...
    assert faint_enmap > 3 * faint_s2  # ... but not in EnMAP


def test_region_is_georeferenced_and_aligned(synth_root):
    region = synth_root / "region"
    manifest = json.loads((region / "region.json").read_text())
    size = manifest["size"]
    with (
        rasterio.open(region / "s2.tif") as s2,
        rasterio.open(region / "enmap.tif") as enmap,
        rasterio.open(region / "label.tif") as label,
        rasterio.open(region / "prior.tif") as prior,
    ):
        assert s2.crs.is_projected and s2.crs == enmap.crs == label.crs == prior.crs
        assert (s2.count, s2.width, s2.height, s2.dtypes[0]) == (120, size, size, "int16")
        assert (enmap.count, enmap.width, enmap.dtypes[0]) == (218, size // 3, "int16")
        assert (label.count, label.dtypes[0], label.nodata) == (4, "uint8", 255)
        assert s2.res == (10.0, 10.0) and enmap.res == (30.0, 30.0)
        assert s2.bounds == enmap.bounds == label.bounds
        assert s2.descriptions[13] == "month02_band04"
        labels = label.read()
        assert (labels[0] == 0).any() and len(np.unique(labels[3])) > 10
    assert not list(region.glob(".*.partial"))


def test_generated_tree_counts_are_configurable():
    taxonomy = generate_taxonomy((2, 4, 4, 9), seed=1)
    assert taxonomy.num_classes == (3, 5, 5, 10)
    with pytest.raises(ValueError, match="non-decreasing"):
        generate_taxonomy((5, 3, 8, 9))


def test_synthesis_refuses_to_mix_with_another_dataset(tmp_path):
    synthesize_dataset(tmp_path / "d", 2, seed=1, region_size=None, progress=False)
    synthesize_dataset(tmp_path / "d", 2, seed=1, region_size=None, progress=False)  # same dataset again: fine
    with pytest.raises(ValueError, match="already holds 2 sample file"):
        synthesize_dataset(tmp_path / "d", 2, seed=2, region_size=None, progress=False)


def test_synthesising_again_leaves_identical_samples_untouched(tmp_path):
    """A second `make demo` writes the same samples: their files (and so the dataset's fingerprint, which
    counts modification times) stay as they were, and a finished training run resumes instead of being
    refused as other data."""
    from h2crop_core.data.index import DatasetIndex

    synthesize_dataset(tmp_path, 4, seed=1, spec=SampleSpec(size=96), region_size=None, progress=False)
    index = DatasetIndex(tmp_path)
    before = index.fingerprint()
    times = {p: p.stat().st_mtime_ns for p in index.all_paths()}
    synthesize_dataset(tmp_path, 4, seed=1, spec=SampleSpec(size=96), region_size=None, progress=False)
    assert {p: p.stat().st_mtime_ns for p in index.all_paths()} == times and index.fingerprint() == before
    synthesize_dataset(
        tmp_path, 4, seed=1, spec=SampleSpec(size=96), region_size=None, label_fraction=0.3, progress=False
    )
    assert index.fingerprint() != before  # other content (sparser labels) is written
