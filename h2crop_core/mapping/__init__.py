"""Mapping whole regions: the region format, tiling geometry, region reads, per-tile prediction and the
mosaic writer.

Nothing here needs Ray: ``pipelines.mapping`` runs :func:`predict_tiles` in a Ray Data actor pool, and a
notebook can call it in a loop. Names are imported on first use (PEP 562), so that reading the region
format (``h2crop_core.mapping.region``, which the synthetic-region writer needs) does not import torch and
the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from h2crop_core.mapping.predict import predict_tiles
    from h2crop_core.mapping.region import (
        MANIFEST,
        REGION_FILES,
        RegionError,
        check_region,
        read_manifest,
        region_identity,
    )
    from h2crop_core.mapping.region_reader import RegionReader
    from h2crop_core.mapping.tiling import Tile, TileGrid
    from h2crop_core.mapping.writer import MappingRecordError, TileStore, write_level_cogs

#: exported name -> the submodule defining it.
_EXPORTS = {
    "MANIFEST": "region",
    "REGION_FILES": "region",
    "RegionError": "region",
    "check_region": "region",
    "read_manifest": "region",
    "region_identity": "region",
    "RegionReader": "region_reader",
    "Tile": "tiling",
    "TileGrid": "tiling",
    "predict_tiles": "predict",
    "MappingRecordError": "writer",
    "TileStore": "writer",
    "write_level_cogs": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
