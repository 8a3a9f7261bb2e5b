"""Mapping whole regions: the region format, tiling geometry, region reads, per-tile prediction and the
mosaic writer.

Nothing here needs Ray: ``pipelines.mapping`` runs :func:`predict_tiles` in a Ray Data actor pool, and a
notebook can call it in a loop.
"""

from h2crop_core.mapping.predict import predict_tiles
from h2crop_core.mapping.region import MANIFEST, REGION_FILES, RegionError, check_region, read_manifest, region_identity
from h2crop_core.mapping.region_reader import RegionReader
from h2crop_core.mapping.tiling import Tile, TileGrid
from h2crop_core.mapping.writer import MappingRecordError, TileStore, write_level_cogs

__all__ = [
    "MANIFEST",
    "REGION_FILES",
    "MappingRecordError",
    "RegionError",
    "RegionReader",
    "Tile",
    "TileGrid",
    "TileStore",
    "check_region",
    "predict_tiles",
    "read_manifest",
    "region_identity",
    "write_level_cogs",
]
