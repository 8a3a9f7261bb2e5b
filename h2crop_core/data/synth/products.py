"""A generated region written as delivered: Sentinel-2 L2A scenes (SAFE folders or zips) with clouds, shadows,
haze and swath edges over the region's monthly truth, STAC ItemCollections over them, an EnMAP L2A product,
and the clean truth to compare composites with (``h2crop synth --products``).

Layout of the products folder (paths in ``products.json`` are relative to it):

* ``s2/<NAME>.SAFE/`` (or ``<NAME>.SAFE.zip`` / ``<NAME>.zip``): per month ``scenes_per_month`` scenes
  (:mod:`~h2crop_core.data.synth.s2_products`); in months 2, 5, 8 and 11 the first is in the neighbouring UTM
  zone; in 2022 January has scenes of baseline 03.01 before the 25th and 04.00 after.
* ``truth/S2_<year>-<mm>.tif``: the region's clean month (10 bands B2..B12, int16, 10,000 × reflectance +
  1,000, nodata -32768); ``truth/clear_<year>-<mm>.tif``: per 10 m pixel the number of scenes clear there by
  SCL (classes other than 0, 1, 2, 3, 8, 9, 10; the other zone's SCL warped by nearest neighbour);
  ``truth/haze_<year>-<mm>.tif``: how many of those clear observations carry haze SCL does not mark.
* ``stac/items.json`` (Earth Search keys), ``stac/items_pc.json`` (Planetary Computer keys).
* ``enmap/<NAME>/``: an EnMAP L2A product of the region's EnMAP scene.
* ``products.json``, written last.

Every pixel of every month has a clear observation except a spot in month 5 that every scene of that month
sees under cloud (``forced_cloud`` in ``products.json``): a composite must be nodata there.

Memory and time: a month is processed whole (its 10 bands at 10 m as float64, one scene at a time): about 0.5 GB
at peak and 70 s (JPEG 2000; 30 s as GeoTIFF) for the demo's 1,008 px region on 2 cores, nearly all of it the
lossless JPEG 2000 encoding of noisy images. Regions far larger would want strips.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from h2crop_core.data.synth.s2_plan import (
    FORCED_MONTH,
    OTHER_ZONE_MONTHS,
    Grid,
    ScenePlan,
    mgrs_tile,
    neighbour_crs,
    plan_month,
    snapped_grid,
    utm_zone,
)
from h2crop_core.data.synth.s2_products import MODEL_BANDS, image_driver
from h2crop_core.data.synth.scene_writer import CLEAR_MARGIN_M, write_month
from h2crop_core.data.synth.stac_items import write_stac
from h2crop_core.errors import SettingError
from h2crop_core.files import PARTIAL, write_text_atomic
from h2crop_core.mapping.region import RegionError, read_manifest

PRODUCTS_FILE = "products.json"
#: what the generated products leave out of real ones (products.json ``left_out``)
LEFT_OUT = (
    "no BRDF or view/sun-angle effects: a pixel's ground reflectance is the same in every scene of a month",
    "no topography, terrain shadow, water, snow or saturated pixels (SCL 1, 2, 6, 7, 11 never occur)",
    "clouds, shadows, cirrus and haze are elliptic blobs; shadows are the cloud shifted, not cast by a 3-D cloud",
    "SCL is exact for clouds and shadows (real SCL misses some and flags bright ground); only the haze is missed",
    "clouds are drawn on the 20 m grid, so each cloud edge follows 20 m pixels in the 10 m bands too",
    "one MGRS tile per UTM zone, cut to the region (real tiles are 109.8 km and overlap their neighbours)",
    "no L1C products, no 60 m bands (B01, B09, B10), no AOT, WVP or TCI rasters, no 20 m/60 m resampled copies "
    "of the 10 m bands",
    "no detector footprints, QI masks (MSK_*), DATASTRIP, AUX_DATA, HTML, rep_info, manifest.safe or INSPIRE.xml",
    "MTD_MSIL2A.xml and MTD_TL.xml hold only the elements readers use (no solar irradiance, reflectance "
    "conversion, angles or QI report names)",
    "no sensor noise, striping or inter-detector differences beyond the region's own noise",
    "before baseline 04.00 reflectances below 0.0001 are stored as DN 1 (the real products clipped them too)",
    "the neighbouring zone's scene is the truth warped (bilinear), so its pixels differ from the truth at parcel "
    "edges, as a real scene of another zone would after warping back",
    "the region's truth keeps the region's own soft clouds in some months; SCL does not mark them (they are truth)",
    "dates and orbits are plausible, not those of real acquisitions; one scene per day",
)


def write_products(
    region_dir: Path,
    out_dir: Path,
    *,
    year: int = 2022,
    scenes_per_month: int = 3,
    seed: int = 0,
    zipped: int = 0,
    progress: bool = True,
    image_format: str = "auto",
    enmap: bool = True,
) -> dict:
    """Write a generated region as delivered products into ``out_dir`` (replaced if it holds products).

    Staged in a hidden folder beside ``out_dir`` and renamed into place at the end, with ``products.json``
    written last, so ``out_dir`` is absent, its old self or complete.

    Args:
        region_dir: a region written by :func:`~h2crop_core.data.synth.region.synthesize_region`.
        out_dir: the products folder.
        year: the calendar year of the scenes (2022: January straddles baseline 04.00).
        scenes_per_month: scenes per month, 2-12.
        seed: everything is a deterministic function of it.
        zipped: how many SAFE scenes to write as zips instead of folders.
        image_format: ``auto`` (JPEG 2000 where GDAL writes it, else GeoTIFF), ``JP2`` or ``GTiff``.
        enmap: also write the EnMAP L2A product.

    Returns:
        The content of ``products.json`` plus ``dir``, the products folder.

    Raises:
        RegionError: the region is incomplete, not in a UTM zone or of odd size.
        SettingError: a setting out of range, or ``out_dir`` holds something other than products.
    """
    from tqdm.auto import tqdm

    region_dir, out_dir = Path(region_dir), Path(out_dir).resolve()
    manifest, region = _region(region_dir)
    _check_settings(out_dir, year, scenes_per_month, zipped, image_format, manifest["months"])
    driver = image_driver(image_format)
    grids = {False: region, True: _other_grid(region)}
    plans = _plans(region, grids[True].crs, manifest["months"], year, scenes_per_month, seed, zipped)
    staging = out_dir.parent / f".{out_dir.name}{PARTIAL}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "s2").mkdir(parents=True)
    forced = _forced_spot(region, seed)
    scenes, truth, entries = [], {}, []
    try:
        with tqdm(total=len(plans) + 2, desc="products", unit="scene", disable=not progress, dynamic_ncols=True) as bar:
            for month in range(1, manifest["months"] + 1):
                month_plans = [plan for plan in plans if plan.month == month]
                spot = forced if month == FORCED_MONTH else None
                records, truth[f"{year}-{month:02d}"] = write_month(
                    staging,
                    region_dir / manifest["files"]["s2"],
                    grids,
                    month_plans,
                    spot,
                    seed,
                    driver,
                    year,
                    bar.update,
                )
                scenes += records
                entries += [(record, plan, grids[plan.other_zone]) for record, plan in zip(records, month_plans)]
            stac = write_stac(staging / "stac", entries, out_dir, driver)
            bar.update(1)
            enmap_record = _enmap(region_dir / manifest["files"]["enmap"], staging, seed) if enmap else None
            bar.update(1)
        record = _record(region_dir, year, seed, scenes_per_month, driver, scenes, truth, stac, enmap_record, forced)
        write_text_atomic(staging / PRODUCTS_FILE, json.dumps(record, indent=1))
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"dir": str(out_dir), **record}


def products_summary(record: dict) -> str:
    """What ``h2crop synth --products`` prints: where the products are and the commands that use them."""
    out, scenes = Path(record["dir"]), record["scenes"]
    baselines = ", ".join(sorted({scene["baseline"] for scene in scenes}))
    zones = ", ".join(sorted({scene["crs"] for scene in scenes}))
    enmap = out / record["enmap"]["path"] if record["enmap"] else None
    like = out / record["truth"][min(record["truth"])]["s2"]
    lines = [
        f"wrote the region as delivered products to {out}: {len(scenes)} Sentinel-2 L2A scenes in s2/ "
        f"({record['image_format']}; baselines {baselines}; {zones}), STAC ItemCollections in stac/, "
        f"{'an EnMAP L2A product in ' + str(enmap) if enmap else 'no EnMAP product'}, the clean monthly truth in "
        f"truth/; what they leave out of real products: {out / PRODUCTS_FILE} (left_out)",
        f"  composite: h2crop composite --scenes {out / 's2'} --year {record['year']} --like {like} --output COMPOSITES",
    ]
    if enmap:
        prior = Path(record["region"]) / "prior.tif"
        lines.append(
            f"  map it:    h2crop map --checkpoint CKPT --s2 COMPOSITES --enmap {enmap} --prior {prior} --output OUT"
        )
    return "\n".join(lines)


def _region(region_dir: Path) -> tuple[dict, Grid]:
    """The region's manifest and its 10 m grid as a :class:`Grid` (20 m-aligned, even-sized)."""
    manifest = read_manifest(region_dir)
    path = region_dir / manifest["files"]["s2"]
    with rasterio.open(path) as src:
        transform, width, height, crs = src.transform, src.width, src.height, src.crs
        count = src.count
    if transform.a != 10 or transform.e != -10 or transform.b or transform.d:
        raise RegionError(f"{path}: transform {tuple(transform)[:6]}; generated products need a north-up 10 m grid")
    if width % 2 or height % 2:
        raise RegionError(f"{path}: {width}x{height} px; generated products need an even size (20 m bands halve it)")
    if count != manifest["months"] * manifest["s2_bands"] or manifest["s2_bands"] != len(MODEL_BANDS):
        raise RegionError(f"{path}: {count} bands; expected {manifest['months']} months x {len(MODEL_BANDS)} bands")
    crs_text = crs.to_string() if crs else ""
    utm_zone(crs_text, str(path))
    return manifest, Grid(crs_text, transform.c, transform.f, width // 2, height // 2)


def _check_settings(out_dir: Path, year: int, per_month: int, zipped: int, image_format: str, months: int) -> None:
    if not 2 <= per_month <= 12:
        raise SettingError(f"scenes_per_month {per_month}: between 2 and 12 (several scenes make a composite)")
    if not 0 <= zipped <= per_month * months:
        raise SettingError(f"zipped {zipped}: between 0 and the number of scenes ({per_month * months})")
    if image_format not in ("auto", "JP2", "GTiff"):
        raise SettingError(f"image_format {image_format!r}: one of auto, JP2, GTiff")
    if not 2015 <= year <= 2100 or months > 12:
        raise SettingError(f"year {year} with {months} months: a Sentinel-2 year (2015 on) of at most 12 months")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / PRODUCTS_FILE).is_file():
        raise SettingError(f"{out_dir}: not empty and holds no {PRODUCTS_FILE}; products go to a new or empty folder")


def _other_grid(region: Grid) -> Grid:
    """The 20 m grid of the neighbouring UTM zone that covers the region."""
    other = neighbour_crs(region.crs, "region")
    return snapped_grid(other, transform_bounds(region.crs, other, *region.bounds, densify_pts=21))


def _plans(region: Grid, other: str, months: int, year: int, per_month: int, seed: int, zipped: int) -> list[ScenePlan]:
    """Every scene of the year, with the tiles of both zones and the zipped ones chosen."""
    centre_x, centre_y = (region.bounds[0] + region.bounds[2]) / 2, (region.bounds[1] + region.bounds[3]) / 2
    tiles = {}
    for is_other, crs in ((False, region.crs), (True, other)):
        xs, ys = transform_points(region.crs, crs, [centre_x], [centre_y])
        _, lats = transform_points(region.crs, "EPSG:4326", [centre_x], [centre_y])
        tiles[is_other] = (crs, mgrs_tile(crs, xs[0], ys[0], lats[0]))
    plans = [
        plan
        for month in range(1, months + 1)
        for plan in plan_month(year, month, per_month, seed, tiles, OTHER_ZONE_MONTHS)
    ]
    chosen = sorted(np.random.default_rng([seed, 2802]).choice(len(plans), zipped, replace=False).tolist())
    for k, index in enumerate(chosen):  # both namings of ESA's downloads: <NAME>.SAFE.zip and <NAME>.zip
        plans[index] = dataclasses.replace(plans[index], zip_suffix=(".SAFE.zip", ".zip")[k % 2])
    return plans


def _forced_spot(region: Grid, seed: int) -> dict:
    """The spot every scene of :data:`FORCED_MONTH` sees under cloud: centre (region CRS), radius, and the
    margin the clouds extend beyond it (so warping a scene's SCL back cannot uncover an edge pixel)."""
    rng = np.random.default_rng([seed, 2804])
    left, bottom, right, top = region.bounds
    x = left + (right - left) * rng.uniform(0.3, 0.7)
    y = bottom + (top - bottom) * rng.uniform(0.3, 0.7)
    radius = max(60.0, 0.05 * min(right - left, top - bottom))
    return {"month": FORCED_MONTH, "centre": [x, y], "crs": region.crs, "radius_m": radius, "margin_m": 40.0}


def _enmap(enmap_tif: Path, staging: Path, seed: int) -> dict:
    """Write the EnMAP L2A product (the EnMAP generator, imported here: the S2 products do not need it)."""
    from h2crop_core.data.synth.enmap_product import write_enmap_product

    product = write_enmap_product(enmap_tif, staging / "enmap", seed=seed)
    return {
        "path": Path(product.path).relative_to(staging).as_posix(),
        "name": product.name,
        "cloud_cover": product.cloud_cover,
        "flagged": product.flagged,
        "wavelengths_nm": list(product.wavelengths_nm),
    }


def _record(
    region_dir: Path,
    year: int,
    seed: int,
    per_month: int,
    driver: str,
    scenes: list[dict],
    truth: dict,
    stac: dict,
    enmap: dict | None,
    forced: dict,
) -> dict:
    """The content of ``products.json``."""
    return {
        "year": year,
        "region": str(region_dir.resolve()),
        "seed": seed,
        "scenes_per_month": per_month,
        "image_format": "JP2" if driver == "JP2OpenJPEG" else "GTiff",
        "image_format_note": (
            "JPEG 2000, lossless (OpenJPEG, QUALITY=100 REVERSIBLE=YES)"
            if driver == "JP2OpenJPEG"
            else "GeoTIFF under the SAFE names with .tif instead of .jp2 (no JP2OpenJPEG driver, or asked for)"
        ),
        "convention": "truth: l2a-offset-1000 (10000 x reflectance + 1000, int16, nodata -32768)",
        "bands": list(MODEL_BANDS),
        "dropped_scl_classes": [0, 1, 2, 3, 8, 9, 10],
        "scenes": scenes,
        "truth": truth,
        "forced_cloud": forced,
        "clear_guarantee": (
            f"every pixel of every month has a scene clear by SCL, except within forced_cloud's radius + margin in its "
            f"month; and one clear {CLEAR_MARGIN_M} m or more from that scene's dropped SCL pixels, so a compositor "
            f"dilating the SCL mask by up to {CLEAR_MARGIN_M} m keeps it (except within {CLEAR_MARGIN_M} m more of "
            "the forced spot)"
        ),
        "stac": {**stac, "hrefs": "absolute paths; zipped scenes as /vsizip/<absolute zip path>/<NAME>.SAFE/<path>"},
        "enmap": enmap,
        "left_out": list(LEFT_OUT),
    }


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to ``out_dir``, the old products (if any) moved aside first."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old{PARTIAL}"
        shutil.rmtree(old, ignore_errors=True)
        out_dir.replace(old)
        shutil.rmtree(old)
    staging.replace(out_dir)
