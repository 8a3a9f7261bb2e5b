"""What a tile's prediction is: class ids and their confidence, and the values that mean "no data" (NumPy only:
the writer and the parcel statistics read them without importing the model)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

#: confidence rasters: 0 is nodata, 1..255 the chosen class's probability × 255 (at least 1)
CONFIDENCE_NODATA = 0


def ids_dtype(num_classes: Iterable[int]) -> np.dtype:
    """uint8 while every level's ids (and the nodata value above them) fit, else uint16."""
    return np.dtype(np.uint8 if max(num_classes) <= 255 else np.uint16)


def ids_nodata(dtype: np.dtype) -> int:
    """The class-id nodata value of a dtype: its largest value (255 for uint8, the benchmark's unlabelled)."""
    return int(np.iinfo(dtype).max)


class TileResult(NamedTuple):
    """One tile's owned core: ``ids`` (levels, h, w) and ``confidence`` (levels, h, w) uint8."""

    ids: np.ndarray
    confidence: np.ndarray
