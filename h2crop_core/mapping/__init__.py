"""Mapping whole regions: the inputs (the user's rasters, or a region folder), tiling geometry, tile reads,
per-tile prediction, the mosaic writer and per-parcel statistics.

Nothing here needs Ray: ``pipelines.mapping.run`` runs :func:`predict_tiles` in a Ray Data actor pool, and a
notebook can call it in a loop. Names are imported on first use, so that reading a finished map (parcel
statistics) does not load PyTorch.
"""

from __future__ import annotations

from h2crop_core.lazy import lazy_exports

#: public name -> the submodule defining it
_EXPORTS = {
    "MANIFEST": "region",
    "REGION_FILES": "region",
    "RegionError": "region",
    "read_manifest": "region",
    "MapInputs": "sources",
    "inputs_from_region": "sources",
    "RegionReader": "region_reader",
    "Tile": "tiling",
    "TileGrid": "tiling",
    "TileResult": "results",
    "predict_tiles": "predict",
    "MappingRecordError": "writer",
    "TileStore": "writer",
    "write_level_cogs": "writer",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
