"""Spatially blocked train/val/test splits with buffers.

Neighbouring tiles look alike (the same parcels run across them, the same soils and weather), so a random
split of tiles scores a model on near-copies of its training data. Whole blocks go to one split instead
(TorchGeo's ``random_grid_cell_assignment``, blockCV, spatialsample), and tiles within ``buffer`` metres of a
block of a stricter split are left out: training tiles near validation or test blocks, validation tiles near
test blocks (blockCV's buffer).

Blocks are assigned by iterative stratification (Sechidis et al., 2011) over the classes of every level: the
class in the fewest unassigned blocks first, each of its blocks to the split that lacks it and still wants
tiles, else to the one that wants that class most. A class in fewer blocks than there are splits cannot be
in every split; the report says which those are, and which could have been and are not.
"""

from __future__ import annotations

import math

import numpy as np

from h2crop_core.errors import SettingError
from h2crop_core.preparing.layout import Layout, PrepTile, distance

SPLIT_ORDER = ("train", "val", "test")
#: a tile is left out when a block of a stricter split lies within the buffer
STRICTNESS = {"train": 0, "val": 1, "test": 2}

#: a class at a level: (level 1-4, class id)
Label = tuple[int, int]


def check_fractions(fractions: tuple[float, ...]) -> dict[str, float]:
    """``(train, val, test)`` fractions that sum to 1 (within 1%), train positive."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1, abs_tol=0.01):
        raise SettingError(f"split takes three fractions (train val test) summing to 1; got {list(fractions)}")
    if fractions[0] <= 0:
        raise SettingError(f"split: the train fraction must be positive; got {list(fractions)}")
    return {s: f / sum(fractions) for s, f in zip(SPLIT_ORDER, fractions) if f > 0}


def assign_blocks(
    block_labels: dict[int, set[Label]], block_tiles: dict[int, int], fractions: dict[str, float], seed: int = 0
) -> dict[int, str]:
    """Each block's split (see the module's docstring).

    Args:
        block_labels: per block, the (level, class) pairs labelled in its tiles.
        block_tiles: per block, its tiles (what the fractions share out).
        fractions: split -> fraction of tiles (splits with none left out).
    """
    rng = np.random.default_rng(seed)
    order = {b: rank for rank, b in enumerate(rng.permutation(sorted(block_labels)).tolist())}
    want = {s: f * sum(block_tiles.values()) for s, f in fractions.items()}
    holders: dict[Label, set[int]] = {}
    for block, labels in block_labels.items():
        for label in labels:
            holders.setdefault(label, set()).add(block)
    want_label = {label: {s: f * len(b) for s, f in fractions.items()} for label, b in holders.items()}
    present: dict[str, set[Label]] = {s: set() for s in fractions}
    split_of: dict[int, str] = {}

    def place(block: int, split: str) -> None:
        split_of[block] = split
        want[split] -= block_tiles[block]
        for label in block_labels[block]:
            want_label[label][split] -= 1
        present[split] |= block_labels[block]

    while len(split_of) < len(block_labels):
        left = {label: blocks - split_of.keys() for label, blocks in holders.items()}
        left = {label: blocks for label, blocks in left.items() if blocks}
        if not left:
            for block in sorted(set(block_labels) - split_of.keys(), key=order.get):
                place(block, max(want, key=lambda s: (want[s], -SPLIT_ORDER.index(s))))
            break
        label = min(left, key=lambda item: (len(left[item]), item))
        for block in sorted(left[label], key=order.get):
            split = max(
                want,
                key=lambda s: (
                    label not in present[s] and want[s] > 0,
                    want_label[label][s],
                    want[s],
                    -SPLIT_ORDER.index(s),
                ),
            )
            place(block, split)
    return split_of


def buffer_left_out(layout: Layout, tiles: list[PrepTile], split_of: dict[int, str], buffer_m: float) -> set[str]:
    """Names of the tiles within ``buffer_m`` metres (strictly) of a block of a stricter split."""
    if buffer_m <= 0:
        return set()
    reach = math.ceil(buffer_m / (layout.block_km * 1000)) + 1  # blocks around a tile's own worth checking
    out = set()
    for tile in tiles:
        own = STRICTNESS[split_of[tile.block]]
        box = layout.tile_bounds(tile)
        row, col = divmod(tile.block, layout.block_cols)
        for r in range(row - reach, row + reach + 1):
            for c in range(max(0, col - reach), min(layout.block_cols, col + reach + 1)):
                other = split_of.get(r * layout.block_cols + c) if r >= 0 else None
                if (
                    other
                    and STRICTNESS[other] > own
                    and distance(box, layout.block_bounds(r * layout.block_cols + c)) < buffer_m
                ):
                    out.add(tile.name)
    return out


def spread_report(
    block_labels: dict[int, set[Label]],
    split_labels: dict[str, set[Label]],
    splits: tuple[str, ...],
    names: list[tuple[str, ...]],
) -> dict:
    """Per level: classes labelled, those in every split, those that could not be (in fewer blocks than there are
    splits) and those that could have been but are not (a buffer took them, or the fractions left no room)."""
    holders: dict[Label, int] = {}
    for labels in block_labels.values():
        for label in labels:
            holders[label] = holders.get(label, 0) + 1
    report = {}
    for level in range(1, 5):
        classes = sorted(c for (lv, c) in holders if lv == level)
        everywhere = [c for c in classes if all((level, c) in split_labels.get(s, set()) for s in splits)]
        impossible = [c for c in classes if holders[(level, c)] < len(splits)]
        missed = [c for c in classes if c not in everywhere and c not in impossible]
        report[f"level{level}"] = {
            "classes": len(classes),
            "in_every_split": len(everywhere),
            "impossible": [names[level - 1][c] for c in impossible],
            "missed": {
                names[level - 1][c]: [s for s in splits if (level, c) not in split_labels.get(s, set())] for c in missed
            },
        }
    return report
