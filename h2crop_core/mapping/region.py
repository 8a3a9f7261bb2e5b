"""The region format: the folder of rasters a map is made from, and the rules they must follow.

A region is a folder with ``region.json`` (written last, so its absence means an incomplete region) naming
``s2.tif`` (month-major bands: band = month × s2_bands + band, 10 m), ``enmap.tif`` (30 m, same extent),
``prior.tif`` (4 levels, 255 = unlabelled) and optionally ``label.tif`` and ``parcels.gpkg``; ``h2crop synth``
writes one. A region is one way of naming a map's inputs (:class:`~h2crop_core.mapping.sources.MapInputs`);
the rasters are checked like any user's (:mod:`h2crop_core.mapping.region_reader`).
"""

from __future__ import annotations

import json
from pathlib import Path

from h2crop_core.errors import H2CropError

MANIFEST = "region.json"
#: role -> file name of the rasters of a region.
REGION_FILES = {"s2": "s2.tif", "enmap": "enmap.tif", "prior": "prior.tif", "label": "label.tif"}
#: keys every ``region.json`` holds.
MANIFEST_KEYS = ("files", "size", "months", "s2_bands", "enmap_bands", "enmap_factor")


class RegionError(H2CropError):
    """A region folder that cannot be mapped; the message names the file and what was expected."""


def read_manifest(region_dir: str | Path) -> dict:
    """``region.json`` of a complete region, with the raster files checked to exist.

    Raises:
        RegionError: the manifest is missing, not JSON, lacks a key, or names a raster that does not exist.
    """
    folder = Path(region_dir)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise RegionError(
            f"{manifest_path}: missing; a region folder needs it (written last, so a region without it is incomplete)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise RegionError(f"{manifest_path}: not valid JSON ({error})") from None
    for key in MANIFEST_KEYS:
        if key not in manifest:
            raise RegionError(f"{manifest_path}: key {key!r} missing; found {sorted(manifest)}")
    for key, name in manifest["files"].items():
        if not (folder / name).is_file():
            raise RegionError(f"{folder / name}: the {key} raster named in {manifest_path} does not exist")
    return manifest
