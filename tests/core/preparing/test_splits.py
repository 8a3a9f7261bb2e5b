"""Blocked splits: classes spread over the splits where blocks allow, fractions kept, no training tile within the
buffer of a validation or test block."""

import numpy as np
import pytest
from affine import Affine

from h2crop_core.errors import SettingError
from h2crop_core.preparing.layout import Layout, distance
from h2crop_core.preparing.splits import assign_blocks, buffer_left_out, check_fractions, spread_report

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def random_blocks(count, seed=0):
    """Blocks holding a common class, a few mid-frequency ones and rare ones (in 1, 2 and 3 blocks)."""
    rng = np.random.default_rng(seed)
    labels = {
        b: {(1, 1)} | {(4, int(c)) for c in rng.choice(np.arange(10, 20), 3, replace=False)} for b in range(count)
    }
    for rare, blocks in ((30, [5]), (31, [6, 17]), (32, [2, 9, 21])):
        for b in blocks:
            labels[b].add((4, rare))
    return labels


def test_blocks_spread_rare_classes_and_keep_the_fractions():
    labels = random_blocks(40)
    tiles = dict.fromkeys(labels, 4)
    split_of = assign_blocks(labels, tiles, FRACTIONS, seed=1)
    assert set(split_of) == set(labels) and set(split_of.values()) == set(FRACTIONS)
    assert split_of == assign_blocks(labels, tiles, FRACTIONS, seed=1)  # deterministic
    share = {s: sum(tiles[b] for b, v in split_of.items() if v == s) / sum(tiles.values()) for s in FRACTIONS}
    for split, fraction in FRACTIONS.items():
        assert share[split] == pytest.approx(fraction, abs=0.08)
    present = {s: set().union(*(labels[b] for b, v in split_of.items() if v == s)) for s in FRACTIONS}
    assert all((4, 32) in present[s] for s in FRACTIONS)  # in 3 blocks: one per split
    assert (4, 31) in present["train"] and sum((4, 31) in present[s] for s in FRACTIONS) == 2
    assert all(all((4, c) in present[s] for s in FRACTIONS) for c in range(10, 20))
    names = [tuple(f"c{i}" for i in range(40))] * 4
    report = spread_report(labels, present, tuple(FRACTIONS), names)["level4"]
    assert report["impossible"] == ["c30", "c31"] and report["missed"] == {}
    assert report["in_every_split"] == report["classes"] - 2


def test_no_training_tile_lies_within_the_buffer_of_a_val_or_test_block():
    layout = Layout.create(Affine(10, 0, 500_000, 0, -10, 5_000_000), "EPSG:32631", 960, 1152, 48, 0.96)
    assert layout.block_tiles == 2 and layout.block_km == pytest.approx(0.96)
    tiles = layout.tiles()
    blocks = sorted({t.block for t in tiles})
    labels = {b: {(1, 1), (4, b % 7)} for b in blocks}
    split_of = assign_blocks(labels, dict.fromkeys(blocks, 4), FRACTIONS, seed=0)
    assert buffer_left_out(layout, tiles, split_of, 0) == set()
    for buffer in (100, 700):
        out = buffer_left_out(layout, tiles, split_of, buffer)
        for tile in tiles:
            own = split_of[tile.block]
            stricter = [
                b for b in blocks if ("train", "val", "test").index(split_of[b]) > ("train", "val", "test").index(own)
            ]
            near = any(distance(layout.tile_bounds(tile), layout.block_bounds(b)) < buffer for b in stricter)
            assert (tile.name in out) == near, (tile, buffer)
        kept_train = [t for t in tiles if split_of[t.block] == "train" and t.name not in out]
        assert kept_train
        assert all(
            distance(layout.tile_bounds(t), layout.block_bounds(b)) >= buffer
            for t in kept_train
            for b in blocks
            if split_of[b] != "train"
        )
    assert len(buffer_left_out(layout, tiles, split_of, 700)) > len(buffer_left_out(layout, tiles, split_of, 100)) > 0


def test_fractions_and_layout_are_checked():
    with pytest.raises(SettingError, match="summing to 1"):
        check_fractions((0.7, 0.2, 0.2))
    assert check_fractions((0.8, 0.2, 0)) == {"train": 0.8, "val": 0.2}
    with pytest.raises(SettingError, match="multiple of 3"):
        Layout.create(Affine(10, 0, 0, 0, -10, 0), "EPSG:32631", 100, 100, 50, 1)
