"""A synthetic region's rasters and parcels as a user has them: twelve monthly S2 files, the EnMAP scene in
its own UTM zone at its own 30 m grid, and parcel registers (this year's, last year's, a crosswalk of their
national codes) in another CRS (the French LPIS is in Lambert-93).

``h2crop synth --user-files`` writes them beside the region; ``make demo`` maps them with ``--s2/--enmap``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window

from h2crop_core.files import PARTIAL

#: the CRS of the synthetic parcels: Lambert-93, as the French LPIS ships
PARCELS_CRS = "EPSG:2154"
PARCELS_FILE = "parcels.gpkg"
#: the EnMAP scene's CRS in the user layout: the UTM zone east of the region's (31N)
USER_ENMAP_CRS = "EPSG:32632"
TILED = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


def write_parcels(
    path: Path,
    parcel: np.ndarray,
    columns: dict[str, np.ndarray],
    transform: Affine,
    crs: str,
    to_crs: str = PARCELS_CRS,
    keep: np.ndarray | None = None,
) -> Path:
    """Polygonise a scene's parcel raster into a GeoPackage in ``to_crs``: ``parcel_id`` and ``columns`` (each
    indexed by parcel id) per parcel; the background between parcels, and parcels where ``keep`` is False, left
    out."""
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes

    polygons: dict[int, list] = {}
    for geometry, value in shapes(parcel.astype(np.int32), mask=parcel > 0, transform=transform):
        polygons.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    ids = [i for i in sorted(polygons) if keep is None or keep[i]]
    frame = gpd.GeoDataFrame(
        {"parcel_id": ids, **{name: [values[i] for i in ids] for name, values in columns.items()}},
        geometry=[shapely.union_all(polygons[i]) for i in ids],
        crs=crs,
    ).to_crs(to_crs)
    partial = path.with_name(f".{path.stem}{PARTIAL}{path.suffix}")  # GDAL wants the .gpkg extension
    partial.unlink(missing_ok=True)
    frame.to_file(partial, driver="GPKG", layer="parcels")
    partial.replace(path)
    return path


def write_monthly_s2(
    s2_path: Path, folder: Path, year: int = 2023, bands: int = 10, strip_rows: int = 512
) -> list[Path]:
    """Split a month-major S2 stack into one ``S2_<year>-<month>.tif`` of ``bands`` bands per month."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with rasterio.open(s2_path) as src:
        profile = {**src.profile, **TILED, "count": bands}
        for month in range(src.count // bands):
            path = folder / f"S2_{year}-{month + 1:02d}.tif"
            partial = path.with_name(f".{path.name}{PARTIAL}")
            with rasterio.open(partial, "w", **profile) as dst:
                dst.descriptions = src.descriptions[month * bands : (month + 1) * bands]
                for top in range(0, src.height, strip_rows):
                    window = Window(0, top, src.width, min(strip_rows, src.height - top))
                    dst.write(
                        src.read(list(range(month * bands + 1, (month + 1) * bands + 1)), window=window), window=window
                    )
            partial.replace(path)
            written.append(path)
    return written


def reproject_raster(src_path: Path, path: Path, crs: str, resolution: float, resampling: str = "bilinear") -> Path:
    """``src_path`` warped into ``crs`` at ``resolution`` (its own grid, covering the whole source), block by
    block through a WarpedVRT."""
    with rasterio.open(src_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=resolution
        )
        partial = path.with_name(f".{path.name}{PARTIAL}")
        with WarpedVRT(
            src,
            crs=crs,
            transform=transform,
            width=width,
            height=height,
            resampling=Resampling[resampling],
            nodata=src.nodata,
        ) as vrt:
            rasterio.shutil.copy(vrt, partial, **TILED)
    partial.replace(path)
    return path


def write_user_files(region: Path, out: Path, enmap_crs: str = USER_ENMAP_CRS) -> dict[str, str]:
    """Write the region's inputs as a user has them into ``out``: ``s2/`` (monthly files), ``enmap.tif`` in
    ``enmap_crs`` at 30 m, ``prior.tif`` (as is) and the region's parcels; returns the paths by role."""
    out.mkdir(parents=True, exist_ok=True)
    write_monthly_s2(region / "s2.tif", out / "s2")
    enmap = reproject_raster(region / "enmap.tif", out / f"enmap_{enmap_crs.replace(':', '')}.tif", enmap_crs, 30.0)
    rasterio.shutil.copy(region / "prior.tif", out / "prior.tif", **TILED)
    for name in (PARCELS_FILE, "parcels_prior.gpkg", "crosswalk.csv"):
        (out / name).write_bytes((region / name).read_bytes())
    return {
        "s2": str(out / "s2"),
        "enmap": str(enmap),
        "prior": str(out / "prior.tif"),
        "parcels": str(out / PARCELS_FILE),
        "prior_parcels": str(out / "parcels_prior.gpkg"),
        "crosswalk": str(out / "crosswalk.csv"),
    }
