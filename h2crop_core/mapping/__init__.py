"""Mapping whole regions: the inputs (the user's rasters, or a region folder), tiling geometry, tile reads,
per-tile prediction, the mosaic writer and per-parcel statistics.

Nothing here needs Ray: ``pipelines.mapping`` runs :func:`predict_tiles` in a Ray Data actor pool, and a
notebook can call it in a loop.
"""

from h2crop_core.mapping.predict import predict_tiles
from h2crop_core.mapping.region import MANIFEST, REGION_FILES, RegionError, read_manifest
from h2crop_core.mapping.region_reader import RegionReader
from h2crop_core.mapping.sources import MapInputs, inputs_from_region
from h2crop_core.mapping.tiling import Tile, TileGrid
from h2crop_core.mapping.writer import MappingRecordError, TileStore, write_level_cogs

__all__ = [
    "MANIFEST",
    "REGION_FILES",
    "MapInputs",
    "MappingRecordError",
    "RegionError",
    "RegionReader",
    "Tile",
    "TileGrid",
    "TileStore",
    "inputs_from_region",
    "predict_tiles",
    "read_manifest",
    "write_level_cogs",
]
