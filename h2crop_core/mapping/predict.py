"""Run a model on a batch of region tiles and keep each tile's owned core: class ids and their confidence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from h2crop_core.data.schema import Sample
from h2crop_core.mapping.results import CONFIDENCE_NODATA, TileResult, ids_dtype, ids_nodata
from h2crop_core.mapping.tiling import Tile
from h2crop_core.models import DualStreamModel
from h2crop_core.models.heads import DEFAULT_DECODE, decode_with_confidence, resolve_decode


def predict_tiles(
    model: DualStreamModel,
    samples: Sequence[Sample],
    tiles: Sequence[Tile],
    *,
    decode: str = DEFAULT_DECODE,
    paths: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> list[TileResult]:
    """Class ids and confidence of each tile's core.

    Args:
        model: the model, in eval mode.
        samples: :meth:`RegionReader.read` outputs, one per tile (same tile size).
        tiles: the tiles, in the same order.
        decode: ``argmax`` per level, ``consistent`` (most probable taxonomy path; four-level models) or
            ``auto`` (consistent for four-level models, else argmax).
        paths: the taxonomy's leaf paths (:attr:`Taxonomy.paths`), needed for ``consistent``.
        device: where the model is.

    Returns:
        One :class:`TileResult` per tile. Ids are uint8 (uint16 for a level of more than 255 classes), with
        the dtype's largest value where the tile had no data; confidence is the chosen class's probability
        × 255 (:func:`~h2crop_core.models.heads.decode_with_confidence`), at least 1, and 0 where no data.
    """
    decode = resolve_decode(decode, model.config.levels)
    if decode == "consistent" and paths is None:
        raise ValueError("consistent decoding needs a four-level model and the taxonomy's paths")
    batch = {
        key: torch.from_numpy(np.stack([sample[key] for sample in samples])).to(device)
        for key in model.config.input_keys
    }
    dtype = ids_dtype(model.config.num_classes[level - 1] for level in model.config.levels)
    with torch.inference_mode():
        ids, confidence = decode_with_confidence(model(**batch), decode, paths)
        confidence = (confidence * 255).round().clamp_(1, 255).to(torch.uint8)
    ids, confidence = ids.cpu().numpy().astype(dtype), confidence.cpu().numpy()
    results = []
    for tile, sample, tile_ids, tile_confidence in zip(tiles, samples, ids, confidence):
        tile_ids[:, ~sample["valid"]] = ids_nodata(dtype)
        tile_confidence[:, ~sample["valid"]] = CONFIDENCE_NODATA
        rows, cols = tile.core_in_tile
        results.append(
            TileResult(
                np.ascontiguousarray(tile_ids[:, rows, cols]), np.ascontiguousarray(tile_confidence[:, rows, cols])
            )
        )
    return results
