"""Generated Sentinel-2 L2A scenes in the SAFE layout: a month's clean ground under one scene's sky, encoded
for the scene's processing baseline and written as ESA delivers it.

A scene's ground is the region's monthly truth (h2crop's convention, stored value = 10,000 × reflectance +
1,000): on the region's own 10 m grid as is, and for a scene in the neighbouring UTM zone warped onto that
zone's grid (bilinear from the 10 m truth). The 20 m bands are 2×2 means of the 10 m ground (what GDAL's
``average`` gives on these aligned grids). Encoding: DN = 10,000 × reflectance, plus 1,000 from baseline 04.00
on (BOA_ADD_OFFSET -1000 in the metadata); DN 0 is no data; before 04.00 reflectances below 0.0001 are clipped
to DN 1, as those products could not store them.

Layout (``<NAME>.SAFE/``): ``MTD_MSIL2A.xml``; ``GRANULE/<granule>/MTD_TL.xml``;
``GRANULE/<granule>/IMG_DATA/R10m/<TILE>_<STAMP>_B02_10m.jp2`` (B02, B03, B04, B08) and ``R20m/..._B05_20m.jp2``
(B05, B06, B07, B8A, B11, B12, SCL). JPEG 2000 lossless (OpenJPEG, uint16; SCL uint8), no nodata tag; where the
installed GDAL lacks the JP2OpenJPEG driver, GeoTIFFs under the same names with ``.tif``.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from h2crop_core.data.synth.s2_metadata import product_metadata, tile_metadata
from h2crop_core.data.synth.s2_plan import Grid, ScenePlan
from h2crop_core.data.synth.s2_sky import SCL_NODATA, SCL_SOIL, SCL_VEGETATION, Sky

#: the model's bands (the region's S2 order) and their SAFE names
MODEL_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
SAFE_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: indices (into the model's order) of the bands delivered at 10 m and at 20 m
TEN_M = (0, 1, 2, 6)
TWENTY_M = (3, 4, 5, 7, 8, 9)
JP2_OPTIONS = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}
TIFF_OPTIONS = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
ZIP_TIME = (2022, 1, 1, 0, 0, 0)  # one timestamp for every zip entry: the same products give the same bytes


@dataclass
class Ground:
    """A month's clean ground on one scene grid: reflectance at 10 m (all 10 bands, NaN outside the truth),
    its 2×2 means at 20 m, and where the 20 m grid has ground under all four 10 m pixels."""

    refl10: np.ndarray
    refl20: np.ndarray
    valid20: np.ndarray


def mean_2x2(array: np.ndarray) -> np.ndarray:
    """(..., 2h, 2w) -> (..., h, w): the mean of each 2×2 block (NaN if any of the four is NaN)."""
    *lead, h, w = array.shape
    return array.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def upsample_2x(array: np.ndarray) -> np.ndarray:
    """(..., h, w) -> (..., 2h, 2w): each 20 m pixel as its four 10 m pixels."""
    return np.repeat(np.repeat(array, 2, axis=-2), 2, axis=-1)


def ground_on(grid: Grid, truth: np.ndarray, region: Grid) -> Ground:
    """The clean ground of a month (``truth``: (10, H, W) float64 reflectance on the region's 10 m grid) on a
    scene's grid: the truth itself on the region's grid, else warped bilinearly (reflectance at 10 m)."""
    if grid == region:
        refl10 = truth
    else:
        refl10 = np.full((truth.shape[0], *grid.shape(10)), np.nan, np.float32)
        reproject(
            truth.astype(np.float32),
            refl10,
            src_transform=region.transform(10),
            src_crs=region.crs,
            src_nodata=np.nan,
            dst_transform=grid.transform(10),
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    refl20 = mean_2x2(refl10)
    return Ground(refl10, refl20, np.isfinite(refl20).all(axis=0))


def encode(reflectance: np.ndarray, offset: float, valid: np.ndarray) -> np.ndarray:
    """Reflectance -> L2A DNs (uint16): 10,000 × reflectance - offset, at least 1, 0 where not ``valid``."""
    dn = np.clip(np.rint(np.nan_to_num(reflectance) * 10_000.0 - offset), 1, 65_535).astype(np.uint16)
    dn[..., ~valid] = 0
    return dn


def render_scene(plan: ScenePlan, ground: Ground, sky: Sky, valid20: np.ndarray) -> dict[str, np.ndarray]:
    """A scene's images: ``dn10`` (4, 2h, 2w) uint16, ``dn20`` (6, h, w) uint16 and ``scl`` (h, w) uint8.

    The sky acts at 20 m; each 10 m pixel takes its 20 m pixel's sky (factor and added reflectance), so the
    20 m bands, means of the 10 m ground, see the same sky as the 10 m ones."""
    refl10 = ground.refl10[list(TEN_M)] * upsample_2x(sky.factor) + upsample_2x(sky.add)
    refl20 = ground.refl20[list(TWENTY_M)] * sky.factor + sky.add
    red, nir = ground.refl20[2], ground.refl20[7]  # B4 and B8A of the clear ground
    with np.errstate(invalid="ignore", divide="ignore"):
        vegetated = (nir - red) / (nir + red) > 0.3
    scl = np.where(sky.scl > 0, sky.scl, np.where(vegetated, SCL_VEGETATION, SCL_SOIL)).astype(np.uint8)
    scl[~valid20] = SCL_NODATA
    return {
        "dn10": encode(refl10, plan.offset, upsample_2x(valid20)),
        "dn20": encode(refl20, plan.offset, valid20),
        "scl": scl,
    }


def image_paths(plan: ScenePlan, extension: str) -> dict[str, str]:
    """SAFE band name (and ``SCL``) -> the image's path inside the SAFE folder, with ``extension``."""
    root = f"GRANULE/{plan.granule}/IMG_DATA"
    paths = {}
    for index, band in enumerate(SAFE_BANDS):
        resolution = 10 if index in TEN_M else 20
        paths[band] = f"{root}/R{resolution}m/{plan.tile}_{plan.stamp}_{band}_{resolution}m{extension}"
    paths["SCL"] = f"{root}/R20m/{plan.tile}_{plan.stamp}_SCL_20m{extension}"
    return paths


def write_safe(
    folder: Path,
    plan: ScenePlan,
    grid: Grid,
    images: dict[str, np.ndarray],
    driver: str,
    footprint: list[tuple[float, float]],
    stats: dict[str, float],
) -> Path:
    """Write a scene's SAFE folder ``folder`` (``<NAME>.SAFE``): the images, ``MTD_MSIL2A.xml``, ``MTD_TL.xml``.

    Args:
        images: :func:`render_scene`'s arrays.
        driver: ``JP2OpenJPEG`` or ``GTiff``.
        footprint: (longitude, latitude) ring of the data footprint.
        stats: ``cloud`` and ``nodata`` percentages for the metadata.
    """
    extension = ".jp2" if driver == "JP2OpenJPEG" else ".tif"
    paths = image_paths(plan, extension)
    arrays = {band: images["dn10"][TEN_M.index(i)] for i, band in enumerate(SAFE_BANDS) if i in TEN_M}
    arrays |= {band: images["dn20"][TWENTY_M.index(i)] for i, band in enumerate(SAFE_BANDS) if i in TWENTY_M}
    arrays["SCL"] = images["scl"]
    for band, relative in paths.items():
        array = arrays[band]
        resolution = 10 if array.shape[-1] == grid.shape(10)[1] else 20
        _write_image(folder / relative, array, grid, resolution, driver)
    listed = [relative.removesuffix(extension) for relative in paths.values()]  # ESA lists them without extension
    (folder / "MTD_MSIL2A.xml").write_bytes(product_metadata(plan, listed, footprint, stats))
    (folder / "GRANULE" / plan.granule / "MTD_TL.xml").write_bytes(tile_metadata(plan, grid))
    return folder


def _write_image(path: Path, array: np.ndarray, grid: Grid, resolution: int, driver: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = JP2_OPTIONS if driver == "JP2OpenJPEG" else TIFF_OPTIONS
    height, width = array.shape
    profile = dict(options, width=width, height=height, count=1, dtype=array.dtype.name)
    with rasterio.open(path, "w", crs=grid.crs, transform=grid.transform(resolution), **profile) as handle:
        handle.write(array, 1)


def zip_safe(folder: Path, zip_path: Path) -> Path:
    """Replace a SAFE folder by a zip holding it (``<NAME>.SAFE/...`` inside, as ESA's downloads): entries
    stored uncompressed (JPEG 2000 is compressed already, and GDAL's /vsizip/ reads stored entries fastest),
    in name order with one timestamp, so the same folder gives the same bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    shutil.rmtree(folder)
    return zip_path


def image_driver(image_format: str) -> str:
    """The GDAL driver for the images: JPEG 2000 where GDAL writes it (``auto``), or as asked."""
    if image_format == "GTiff":
        return "GTiff"
    with rasterio.Env() as env:
        has_jp2 = "JP2OpenJPEG" in env.drivers()
    if image_format == "JP2" and not has_jp2:
        from h2crop_core.errors import SettingError

        raise SettingError("image_format='JP2': the installed GDAL has no JP2OpenJPEG driver")
    return "JP2OpenJPEG" if has_jp2 else "GTiff"


def on_region(array: np.ndarray, grid: Grid, region: Grid) -> np.ndarray:
    """A scene's 20 m class raster (SCL, or a 0/1 mask) on the region's 10 m grid, by nearest neighbour
    (0 outside the scene), as a compositor reads it."""
    if grid == region:
        return upsample_2x(array)
    out = np.zeros(region.shape(10), array.dtype)
    reproject(
        array,
        out,
        src_transform=grid.transform(20),
        src_crs=grid.crs,
        src_nodata=0,
        dst_transform=region.transform(10),
        dst_crs=region.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    return out
