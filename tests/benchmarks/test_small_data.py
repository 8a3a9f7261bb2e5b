"""The small-data benchmark's protocols (benchmarks/small_data.py): the scene split and the ceiling it
reports, on tiny generated sets (no Ray)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import infer_dataset_spec, read_sample
from h2crop_core.taxonomy import UNLABELLED

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_data.py"


@pytest.fixture(scope="module")
def small_data():
    spec = importlib.util.spec_from_file_location("small_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arrays(root: Path, split: str) -> dict[str, dict]:
    paths = DatasetIndex(root).split_paths(split)
    spec = infer_dataset_spec(paths)
    return {Path(p).stem.rsplit("-", 1)[0]: read_sample(p, spec=spec) for p in paths}


def test_the_scene_protocol_splits_every_tiles_labelled_pixels_and_keeps_its_images(small_data, tmp_path):
    args = argparse.Namespace(protocol="scene", tiles=4, world_kind="drawn", label_fraction=0.1, gaps=0.0)
    root = small_data.make_cell_data(tmp_path / "cell", world=0, seed=1, args=args)
    dense = arrays(tmp_path / "cell" / "dense", "train") | arrays(tmp_path / "cell" / "dense", "val")
    dense |= arrays(tmp_path / "cell" / "dense", "test")
    splits = {split: arrays(root, split) for split in ("train", "val", "test")}
    assert all(set(tiles) == set(dense) for tiles in splits.values()) and len(dense) == 4
    shares = np.zeros(3)
    for name, sample in dense.items():
        labelled = sample["label"] != UNLABELLED
        seen = np.zeros_like(labelled, dtype=int)
        for i, tiles in enumerate(splits.values()):
            np.testing.assert_array_equal(tiles[name]["s2"], sample["s2"])  # the same images in every split
            np.testing.assert_array_equal(tiles[name]["enmap"], sample["enmap"])
            mine = tiles[name]["label"] != UNLABELLED
            np.testing.assert_array_equal(tiles[name]["label"][mine], sample["label"][mine])
            seen += mine
            shares[i] += mine[3].sum()
        np.testing.assert_array_equal(seen, labelled)  # each labelled pixel in exactly one split
    shares /= shares.sum()
    np.testing.assert_allclose(shares, [0.10, 0.05, 0.85], atol=0.01)
    assert small_data.seen_share(root) > 0.99  # scored classes have training pixels in the same tiles
    assert small_data.make_cell_data(tmp_path / "cell", world=0, seed=1, args=args) == root  # made once
    # cells of another bare-soil share are other cells; without gaps the names stay as they were
    assert small_data.cell_name(args, 1, 2) == "scene-w1-s2"
    assert small_data.cell_name(argparse.Namespace(protocol="scene", gaps=0.3), 1, 2) == "scene-g0.3-w1-s2"


def test_the_ceiling_counts_the_scored_pixels_of_classes_never_trained_on(small_data, tmp_path):
    args = argparse.Namespace(protocol="survey", tiles=10, world_kind="drawn", label_fraction=0.3, gaps=0.0)
    root = small_data.make_cell_data(tmp_path / "cell", world=0, seed=0, args=args)
    train = {int(v) for s in arrays(root, "train").values() for v in np.unique(s["label"][3])} - {UNLABELLED}
    test = np.concatenate([s["label"][3].ravel() for s in arrays(root, "test").values()])
    test = test[test != UNLABELLED]
    assert len(test)
    expected = np.isin(test, list(train)).mean()
    assert small_data.seen_share(root) == pytest.approx(expected) and 0 < expected < 1  # some never trained on
