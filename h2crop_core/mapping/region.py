"""The region format: the folder of rasters a map is made from, and the rules they must follow.

A region is a folder with ``region.json`` (written last, so its absence means an incomplete region) naming
``s2.tif`` (month-major bands: band = month × s2_bands + band, 10 m), ``enmap.tif`` (30 m, same extent),
``prior.tif`` (4 levels, 255 = unlabelled) and optionally ``label.tif``; ``h2crop synth --region`` writes
one. Readers (:mod:`h2crop_core.mapping.region_reader`) and writers (:mod:`h2crop_core.data.synth.region`)
both take the format from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import rasterio
from affine import Affine

from h2crop_core.errors import H2CropError
from h2crop_core.files import file_digest

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
        raise RegionError(f"{manifest_path}: missing; a region folder needs it (written last, so a region without it is incomplete)")
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


def check_region(
    folder: Path,
    manifest: dict,
    open_raster: Callable[[str], rasterio.DatasetReader],
    *,
    months: int,
    modalities: Sequence[str],
    s2_bands: int,
    enmap_bands: int,
    factor: int,
) -> None:
    """Check that a region holds what a model reads: the manifest promises enough months and the model's band
    counts, names a raster for each modality, and the rasters line up.

    Args:
        folder: the region folder.
        manifest: its :func:`read_manifest`.
        open_raster: opens the raster of a role (``s2``, ``enmap``, ``prior``); only those read are opened.
        months, modalities, s2_bands, enmap_bands, factor: what the model reads.

    Raises:
        RegionError: naming the file and what the model needs.
    """
    manifest_path = folder / MANIFEST
    promised = {"months": (months, "at least"), "s2_bands": (s2_bands, "exactly"), "enmap_bands": (enmap_bands, "exactly"), "enmap_factor": (factor, "exactly")}
    for key, (value, how) in promised.items():
        if "enmap" in key and "enmap" not in modalities:
            continue
        found = manifest[key]
        if (how == "at least" and found < value) or (how == "exactly" and found != value):
            raise RegionError(f"{manifest_path}: {key} is {found}; the model needs {how} {value}")
    missing = [m for m in modalities if m not in manifest["files"]]
    if missing:
        raise RegionError(f"{manifest_path}: the model reads {list(modalities)}; the region has no {missing} raster")
    # The rasters must line up: the same CRS, S2 and prior on one grid, EnMAP on it coarsened by the factor,
    # and enough bands. rasterio clips windows that run off a raster, so a misfit raster would otherwise give
    # short reads or a silently misregistered map.
    s2 = open_raster("s2")
    where = lambda key: folder / manifest["files"][key]  # noqa: E731
    if s2.count < months * s2_bands:
        raise RegionError(f"{where('s2')}: {s2.count} bands; the model needs {months} months × {s2_bands} bands (month-major)")
    if s2.height % factor or s2.width % factor:
        raise RegionError(f"{where('s2')}: {s2.height}×{s2.width} pixels is not a whole number of {factor}-pixel EnMAP cells")
    grids = {
        "prior": (s2.transform, (s2.height, s2.width), 4),
        "enmap": (s2.transform @ Affine.scale(factor), (s2.height // factor, s2.width // factor), enmap_bands),
    }
    for key in ("prior", "enmap"):
        if key not in modalities:
            continue
        transform, shape, bands = grids[key]
        handle = open_raster(key)
        found = {"CRS": handle.crs, "transform": handle.transform, "shape": (handle.height, handle.width), "bands": handle.count}
        wanted = {"CRS": s2.crs, "transform": transform, "shape": shape, "bands": bands}
        bad = [k for k in wanted if (found[k] != wanted[k] if k != "transform" else not found[k].almost_equals(wanted[k]))]
        if bad:
            raise RegionError(
                f"{where(key)}: does not line up with {where('s2')}: " + "; ".join(f"{k} {found[k]}, expected {wanted[k]}" for k in bad)
            )


def region_identity(folder: str | Path, manifest: dict) -> dict:
    """What identifies a region's content in a mapping run's resume record: its manifest's digest and each
    raster's size and modification time (not its path: a moved region still resumes; not the rasters'
    digests: hashing gigabytes of GeoTIFF on every start would cost more than the check is worth)."""
    folder = Path(folder)
    rasters = {}
    for key, name in sorted(manifest["files"].items()):
        stat = (folder / name).stat()
        rasters[key] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"manifest_sha256": file_digest(folder / MANIFEST), "rasters": rasters}
