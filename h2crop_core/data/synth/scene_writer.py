"""One month of generated Sentinel-2 products: its scenes (ground, sky, SAFE folder or zip) and its truth files
(the clean month, and per pixel how many scenes see it clear and how many of those carry unmarked haze).

The month's last scene is drawn after the others and keeps its clouds (and their shadows) at least
:data:`CLEAR_MARGIN_M` away from every pixel none of them saw clear that far from their own clouds (whole blobs
are dropped, so clouds stay blobs): every pixel of the month then has a clear observation, even for a
compositor that dilates the SCL mask by up to that margin, except around the forced spot of
:data:`~h2crop_core.data.synth.s2_plan.FORCED_MONTH`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_geom

from h2crop_core.data.synth.s2_plan import PIXEL_20M, Grid, ScenePlan
from h2crop_core.data.synth.s2_products import (
    MODEL_BANDS,
    Ground,
    ground_on,
    on_region,
    render_scene,
    write_safe,
    zip_safe,
)
from h2crop_core.data.synth.s2_sky import DROPPED_SCL, draw_blobs, grow, keep_off, render_sky, swath_mask

#: how far from any cloud, shadow or cirrus pixel of its scene the observation the month's last scene
#: guarantees lies (a compositor's SCL dilation up to this keeps it)
CLEAR_MARGIN_M = 40
TRUTH_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


def write_month(
    staging: Path,
    s2_path: Path,
    grids: dict[bool, Grid],
    plans: list[ScenePlan],
    spot: dict | None,
    seed: int,
    driver: str,
    year: int,
    on_scene: Callable[[int], object] = lambda done: None,
) -> tuple[list[dict], dict]:
    """Write a month's scenes into ``staging/s2`` and its truth files into ``staging/truth``.

    Args:
        s2_path: the region's month-major S2 stack (the truth).
        grids: the scene grid of the region's zone (False, the region's own grid) and of the other zone (True).
        plans: the month's scenes, by date.
        spot: the forced cloud spot (:func:`~h2crop_core.data.synth.products._forced_spot`) or None.
        on_scene: called with 1 after each scene (a progress bar's ``update``).

    Returns:
        (a record per scene, the month's truth entry for ``products.json``).
    """
    region = grids[False]
    month = plans[0].month
    bands = len(MODEL_BANDS)
    with rasterio.open(s2_path) as src:
        dn = src.read(list(range((month - 1) * bands + 1, month * bands + 1)))
    truth = (dn.astype(np.float64) - 1000.0) / 10_000.0  # h2crop's convention back to reflectance
    grounds: dict[bool, Ground] = {}
    clear = np.zeros(region.shape(10), np.uint8)
    haze = np.zeros(region.shape(10), np.uint8)
    clear_far = np.zeros(region.shape(10), bool)  # clear, and CLEAR_MARGIN_M from the scene's dropped pixels
    records = []
    for plan in plans:
        if plan.other_zone not in grounds:
            grounds[plan.other_zone] = ground_on(grids[plan.other_zone], truth, region)
        record, scl, hazy = _scene(
            staging / "s2",
            plan,
            grids[plan.other_zone],
            grounds[plan.other_zone],
            region,
            clear_far,
            spot,
            seed,
            driver,
        )
        seen = ~np.isin(scl, DROPPED_SCL)
        clear_far |= seen & ~grow(~seen & (scl != 0), CLEAR_MARGIN_M // 10)
        clear += seen
        haze += seen & hazy
        record.update(_fractions(scl, hazy & seen, seen))
        records.append(record)
        on_scene(1)
    entry = _write_truth(staging / "truth", dn, region, clear, haze, f"{year}-{month:02d}")
    entry["scenes"] = [plan.name for plan in plans]
    return records, entry


def _scene(
    folder: Path,
    plan: ScenePlan,
    grid: Grid,
    ground: Ground,
    region: Grid,
    clear_far: np.ndarray,
    spot: dict | None,
    seed: int,
    driver: str,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Draw and write one scene; returns its record and its SCL and haze mask on the region's 10 m grid."""
    rng = np.random.default_rng([seed, plan.month, plan.index, 2803])
    shape = grid.shape(20)
    swath = swath_mask(shape, rng)  # drawn for every scene: the draws after it stay the same
    valid20 = ground.valid20 & swath if plan.partial else ground.valid20
    forced = _spot_pixels(spot, grid) if spot else None
    blobs = draw_blobs(shape, rng, haze=plan.haze, cirrus=plan.cirrus, forced=forced)
    if plan.last:  # always in the region's zone: its 20 m grid is the region's
        never = grow((~clear_far).reshape(shape[0], 2, shape[1], 2).any(axis=(1, 3)), CLEAR_MARGIN_M // 20)
        under_spot = [blob.footprint(shape) for blob in blobs if blob.forced]
        blobs = keep_off(blobs, shape, never & ~under_spot[0] if under_spot else never)
    sky = render_sky(blobs, shape)
    images = render_scene(plan, ground, sky, valid20)
    outline = _footprint(valid20, grid)
    valid_count = max(int(valid20.sum()), 1)
    stats = {
        "cloud": 100.0 * float(np.isin(images["scl"], (8, 9, 10)).sum()) / valid_count,
        "nodata": 100.0 * float((~valid20).mean()),
    }
    safe = write_safe(folder / f"{plan.name}.SAFE", plan, grid, images, driver, outline["ring"], stats)
    path = zip_safe(safe, folder / f"{plan.name}{plan.zip_suffix}") if plan.zip_suffix else safe
    record = {
        "name": plan.name,
        "path": f"s2/{path.name}",
        "zipped": bool(plan.zip_suffix),
        "date": plan.sensed.date().isoformat(),
        "time": plan.sensed.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "month": plan.month,
        "baseline": plan.baseline,
        "boa_add_offset": plan.offset,
        "spacecraft": plan.spacecraft,
        "crs": grid.crs,
        "zone": int(grid.crs.split(":")[1]) % 100,
        "tile": plan.tile,
        "relative_orbit": plan.relative_orbit,
        "other_zone": plan.other_zone,
        "partial": plan.partial,
        "cloud_percentage": round(stats["cloud"], 4),
        "nodata_percentage": round(stats["nodata"], 4),
        "bbox": outline["bbox"],
        "geometry": outline["geometry"],
    }
    hazy = on_region((sky.hazy & valid20).astype(np.uint8), grid, region) > 0
    return record, on_region(images["scl"], grid, region), hazy


def _spot_pixels(spot: dict, grid: Grid) -> tuple[float, float, float]:
    """The forced spot in a scene's 20 m pixels: (row, column, radius), the radius grown by the margin."""
    xs, ys = transform_points(spot["crs"], grid.crs, [spot["centre"][0]], [spot["centre"][1]])
    column, row = ~grid.transform(20) @ (xs[0], ys[0])
    return row, column, (spot["radius_m"] + spot["margin_m"]) / PIXEL_20M


def _footprint(valid20: np.ndarray, grid: Grid) -> dict:
    """The scene's data footprint in WGS 84: GeoJSON ``geometry``, ``bbox`` and the outer ``ring``."""
    parts = [
        shapely.geometry.shape(geometry)
        for geometry, _ in shapes(valid20.astype(np.uint8), mask=valid20, transform=grid.transform(20))
    ]
    outline = shapely.union_all(parts).simplify(PIXEL_20M)
    wgs84 = shapely.geometry.shape(transform_geom(grid.crs, "EPSG:4326", shapely.geometry.mapping(outline)))
    largest = max(getattr(wgs84, "geoms", [wgs84]), key=lambda polygon: polygon.area)
    return {
        "geometry": shapely.geometry.mapping(wgs84),
        "bbox": [round(v, 7) for v in wgs84.bounds],
        "ring": [(round(x, 7), round(y, 7)) for x, y in largest.exterior.coords],
    }


def _fractions(scl: np.ndarray, hazy: np.ndarray, seen: np.ndarray) -> dict[str, float]:
    """Fractions of the region's pixels the scene covers, sees clear, and sees under cloud, shadow, cirrus, haze."""
    return {
        "coverage": round(float((scl != 0).mean()), 5),
        "clear_fraction": round(float(seen.mean()), 5),
        "cloud_fraction": round(float(np.isin(scl, (8, 9)).mean()), 5),
        "shadow_fraction": round(float((scl == 3).mean()), 5),
        "cirrus_fraction": round(float((scl == 10).mean()), 5),
        "haze_fraction": round(float(hazy.mean()), 5),
    }


def _write_truth(folder: Path, dn: np.ndarray, region: Grid, clear: np.ndarray, haze: np.ndarray, stamp: str) -> dict:
    """``S2_<stamp>.tif`` (the clean month), ``clear_<stamp>.tif`` and ``haze_<stamp>.tif`` (counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = region.shape(10)
    common = dict(TRUTH_PROFILE, width=width, height=height, crs=region.crs, transform=region.transform(10))
    names = {"s2": f"S2_{stamp}.tif", "clear": f"clear_{stamp}.tif", "haze": f"haze_{stamp}.tif"}
    with rasterio.open(
        folder / names["s2"], "w", count=len(MODEL_BANDS), dtype="int16", nodata=-32768, **common
    ) as dst:
        dst.descriptions = MODEL_BANDS
        dst.update_tags(h2crop_s2_convention="l2a-offset-1000")
        dst.write(dn)
    for key, counts in (("clear", clear), ("haze", haze)):
        with rasterio.open(folder / names[key], "w", count=1, dtype="uint8", **common) as dst:
            dst.write(counts, 1)
    return {
        **{key: f"truth/{name}" for key, name in names.items()},
        "pixels_without_clear": int((clear == 0).sum()),
        "max_clear": int(clear.max()),
    }
