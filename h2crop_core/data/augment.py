"""Joint augmentations: every spatial modality, the labels and the priors move together.

EnMAP lies on a grid exactly 3× coarser than S2/labels/priors over the same footprint, so flips and 90°
rotations of the whole tile commute with it; CutMix boxes are snapped to multiples of 3 S2 pixels so the
pasted EnMAP box covers exactly the same ground.
"""

from __future__ import annotations

import torch

#: keys with spatial last two axes; ``enmap`` is on the coarse grid.
SPATIAL_KEYS = ("s2", "enmap", "label", "prior")


def flip_rotate(sample: dict, quarter_turns: int, flip: bool) -> dict:
    """Rotate every spatial array of ``sample`` by ``quarter_turns`` × 90° and optionally mirror it.

    The eight (quarter_turns, flip) pairs are the eight symmetries of the square, so vertical flips,
    horizontal flips and transposes are all among them. Works on a sample or a batch (spatial axes last).
    """
    out = dict(sample)
    for key in SPATIAL_KEYS:
        if key in out:
            value = torch.rot90(out[key], quarter_turns % 4, dims=(-2, -1))
            out[key] = value.flip(-1) if flip else value
    return out


def random_flip_rotate(batch: dict, generator: torch.Generator | None = None) -> dict:
    """Apply an independent random symmetry of the square to each sample of a batch."""
    size = _batch_size(batch)
    choices = torch.randint(0, 8, (size,), generator=generator).tolist()
    out = dict(batch)
    for key in SPATIAL_KEYS:
        if key in batch:
            out[key] = torch.stack(
                [flip_rotate({key: batch[key][i]}, c % 4, c >= 4)[key] for i, c in enumerate(choices)]
            )
    return out


def batch_cutmix(
    batch: dict,
    generator: torch.Generator | None = None,
    *,
    p: float = 0.5,
    min_side: float = 0.5,
    max_side: float = 1.0,
    factor: int = 3,
) -> dict:
    """Paste a square box from another sample of the batch into each sample with probability ``p``.

    The same ground box goes into S2, EnMAP (its coordinates ÷ ``factor``), the labels and the priors, so
    the pasted region stays a coherent sample with its own prior-year crops (the research code leaves the
    priors unmixed). The side is drawn uniformly between ``min_side`` and ``max_side`` of the tile side.

    Returns:
        A new batch dict; the input is not modified.
    """
    size = _batch_size(batch)
    fine = batch["label"].shape[-1] if "label" in batch else batch["s2"].shape[-1]
    coarse = fine // factor
    out = dict(batch)
    for key in SPATIAL_KEYS:
        if key in batch:
            out[key] = batch[key].clone()
    if size < 2:
        return out
    partners = torch.randperm(size, generator=generator)
    draws = torch.rand((size, 4), generator=generator)
    low = max(1, int(round(min_side * coarse)))
    high = max(low, int(max_side * coarse))
    for i in range(size):
        if draws[i, 0] >= p:
            continue
        j = int(partners[i])
        if j == i:
            j = (i + 1) % size
        side = low + int(draws[i, 1] * (high - low + 1)) if high > low else low
        side = min(side, coarse)
        top = int(draws[i, 2] * (coarse - side + 1))
        left = int(draws[i, 3] * (coarse - side + 1))
        for key in SPATIAL_KEYS:
            if key not in batch:
                continue
            scale = 1 if key == "enmap" else factor
            rows = slice(top * scale, (top + side) * scale)
            cols = slice(left * scale, (left + side) * scale)
            out[key][i, ..., rows, cols] = batch[key][j, ..., rows, cols]
    return out


def _batch_size(batch: dict) -> int:
    for key in SPATIAL_KEYS:
        if key in batch:
            return int(batch[key].shape[0])
    raise KeyError(f"batch holds none of {SPATIAL_KEYS}")
