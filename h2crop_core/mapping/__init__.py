"""Mapping whole regions: tiling geometry, region reads, per-tile prediction and the mosaic writer.

Nothing here needs Ray: ``pipelines.mapping`` runs :func:`predict_tiles` in a Ray Data actor pool, and a
notebook can call it in a loop.
"""

from h2crop_core.mapping.predict import predict_tiles
from h2crop_core.mapping.region_reader import RegionError, RegionReader
from h2crop_core.mapping.tiling import Tile, TileGrid
from h2crop_core.mapping.writer import MappingRecordError, TileStore, write_level_cogs

__all__ = [
    "MappingRecordError",
    "RegionError",
    "RegionReader",
    "Tile",
    "TileGrid",
    "TileStore",
    "predict_tiles",
    "write_level_cogs",
]
