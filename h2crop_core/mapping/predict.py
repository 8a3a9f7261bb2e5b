"""Run a model on a batch of region tiles and keep each tile's owned core."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from h2crop_core.data.schema import Sample
from h2crop_core.mapping.tiling import Tile
from h2crop_core.models import DualStreamModel
from h2crop_core.models.heads import DEFAULT_DECODE, decode_argmax, decode_consistent, resolve_decode
from h2crop_core.taxonomy import UNLABELLED


def predict_tiles(
    model: DualStreamModel,
    samples: Sequence[Sample],
    tiles: Sequence[Tile],
    *,
    decode: str = DEFAULT_DECODE,
    paths: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Class ids of each tile's core.

    Args:
        model: the model, in eval mode.
        samples: :meth:`RegionReader.read` outputs, one per tile (same tile size).
        tiles: the tiles, in the same order.
        decode: ``argmax`` per level, ``consistent`` (most probable taxonomy path; four-level models) or
            ``auto`` (consistent for four-level models, else argmax).
        paths: the taxonomy's leaf paths (:attr:`Taxonomy.paths`), needed for ``consistent``.
        device: where the model is.

    Returns:
        One (levels, core height, core width) uint8 array per tile; 255 where the tile had no S2 data.
    """
    decode = resolve_decode(decode, model.config.levels)
    if decode == "consistent" and paths is None:
        raise ValueError("consistent decoding needs a four-level model and the taxonomy's paths")
    batch = {
        key: torch.from_numpy(np.stack([sample[key] for sample in samples])).to(device)
        for key in model.config.input_keys
    }
    with torch.inference_mode():
        logits = model(**batch)
        ids = decode_consistent(logits, paths) if decode == "consistent" else decode_argmax(logits)
    ids = ids.to(torch.uint8).cpu().numpy()
    cores = []
    for tile, sample, tile_ids in zip(tiles, samples, ids):
        tile_ids[:, ~sample["valid"]] = UNLABELLED
        rows, cols = tile.core_in_tile
        cores.append(np.ascontiguousarray(tile_ids[:, rows, cols]))
    return cores
