"""Monthly Sentinel-2 composites at two region sizes: ``h2crop composite`` (Ray actors over blocks) against the
simplest thing a user would otherwise write, odc-stac's ``load`` of a month's STAC items + an xarray median,
on the same generated scenes and grid, with each process's peak memory.

    python benchmarks/composite_throughput.py [--sizes 576 1152] [--months 1-4] [--formats JP2 GTiff]
                                              [--blocks N [N ...]] [--actors N] [--json PATH] [--smoke]

For each size and image format it generates a region (``synthesize_dataset(..., region_size=N)``) and writes it
as delivered products (``write_products``: three L2A scenes a month, one orbit a month in the neighbouring UTM
zone in months 2, 5, 8, 11, baselines on both sides of 04.00 in January, and a STAC ItemCollection
``stac/items.json`` with Earth Search asset keys), then runs each mode in a fresh process, so that the peak
resident memory each reports is its own:

* ``h2crop composite``: :func:`~pipelines.compositing.run.composite_region` of ``stac/items.json`` onto the
  truth's grid with the command's settings (block, actors: the defaults unless ``--blocks``/``--actors``), Ray
  started first (its start-up is reported apart; actor start-up is in the time), the monthly GeoTIFFs and
  ``composite.json`` written; memory: the driver's and the largest actor's peak (``composite.json``).
* odc-stac + xarray, per month: ``odc.stac.load`` of the month's items onto an ``odc.geo`` GeoBox of the same
  grid (bilinear for the bands, nearest for ``scl``; ``chunks=None``: in memory, as a user does), clear where
  ``scl`` is none of 0, 1, 2, 3, 8, 9, 10 and the band is not 0, each item's DN offset from its
  ``s2:processing_baseline`` (-1000 from 04.00 on), ``.median("time")``, one 10-band int16 GeoTIFF written with
  rasterio (nodata -32768, h2crop's convention 10,000 x reflectance + 1,000); memory: the process's peak.

Agreement (reported, not asserted): the share of pixels valid in both composites where the four 10 m bands agree
within 1% reflectance (100 in the convention), and the shares valid in only one of them: the two differ by
design at cloud edges (h2crop dilates the SCL mask by a pixel, and needs every band of an observation clear) and
where the other zone's scene is warped (GDAL's warper in both, with its own source windows).

``--formats``: the scenes' image format, ``JP2`` (JPEG 2000 as in ESA's SAFE products, with GDAL's default
1024-px code-stream tiles, as ESA's: a band up to 1,024 px is one tile, and any window of a tile decodes all of
it) and/or ``GTiff`` (tiled 256 px, deflate: the layout of the Cloud-Optimized GeoTIFFs behind Earth Search's
items). The default sizes, 576 and 1,152 px, are both over one 512-px block (the command's default), so the
largest actor holds a full block at both, and 1,152 px scenes have several JPEG 2000 tiles. ``--smoke``: 96 and
192 px, months 1-2, GeoTIFF, ``h2crop composite`` at 192 px only (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from h2crop_core.memory import peak_rss_mb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
YEAR = 2022
#: Earth Search asset keys of the model's bands, in the model's order (B2 ... B12); the SCL's is ``scl``
ASSETS = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22")
DROP = (0, 1, 2, 3, 8, 9, 10)
TEN_M = (0, 1, 2, 6)  # B2, B3, B4, B8 in the model's order
TOLERANCE = 100  # 1% reflectance in h2crop's convention (10,000 x reflectance + 1,000)
NODATA = -32768
FORMAT_NAMES = {"JP2": "JPEG 2000", "GTiff": "GeoTIFF"}


def make_products(folder: Path, size: int, image_format: str) -> Path:
    """A generated region of ``size`` px written as delivered products; returns the products folder."""
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.data.synth.products import write_products

    synthesize_dataset(folder / "data", 3, seed=1, region_size=size, progress=False)
    products = folder / "products"
    write_products(
        folder / "data" / "region", products, scenes_per_month=3, enmap=False, image_format=image_format, progress=False
    )
    return products


def truth_grid(products: Path) -> Path:
    """The raster whose grid both composites take (the clean truth of January)."""
    return products / "truth" / f"S2_{YEAR}-01.tif"


def ours(products: Path, out: Path, months: str, block: int | None, actors: int | None) -> dict:
    """``h2crop composite`` of the STAC items, Ray started before the clock."""
    from h2crop_core.compositing.grid import TargetGrid
    from pipelines.compositing.run import composite_region
    from pipelines.runtime.cluster import connect_ray
    from pipelines.settings import CompositeSettings

    start = time.perf_counter()
    connect_ray()
    ray_start_s = time.perf_counter() - start
    settings = CompositeSettings(months=months, actors=actors, **({"block": block} if block else {}))
    start = time.perf_counter()
    manifest = composite_region(
        str(products / "stac" / "items.json"),
        YEAR,
        out,
        TargetGrid.like(truth_grid(products)),
        settings,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "blocks_s": manifest["seconds"],  # scenes found, actors started, every block made and stored
        "write_s": manifest["total_s"] - manifest["seconds"],  # the monthly GeoTIFFs and counts
        "ray_start_s": ray_start_s,
        "block": settings.block,
        "blocks": manifest["blocks"],
        "actors": len(manifest["actors_peak_rss_mb"]),
        "driver_rss_mb": manifest["driver_peak_rss_mb"],
        "actors_rss_mb": sorted(manifest["actors_peak_rss_mb"].values()),
    }


def odc_month(items: list, geobox) -> tuple:
    """One month the way a user writes it with odc-stac and xarray: (median composite, load seconds)."""
    import numpy as np
    import odc.stac
    import xarray as xr

    items = sorted(items, key=lambda item: item.datetime)
    start = time.perf_counter()
    data = odc.stac.load(
        items, bands=[*ASSETS, "scl"], geobox=geobox, resampling={"*": "bilinear", "scl": "nearest"}, chunks=None
    )
    load_s = time.perf_counter() - start
    assert data.sizes["time"] == len(items), "two items at one time: the offsets would not line up"
    # from processing baseline 04.00 on, DNs carry BOA_ADD_OFFSET -1000: reflectance = (DN - 1000) / 10000
    offsets = [-1000.0 if item.properties["s2:processing_baseline"] >= "04.00" else 0.0 for item in items]
    offset = xr.DataArray(np.float32(offsets), dims="time", coords={"time": data.time})
    clear = ~data.scl.isin(DROP)
    bands = [(data[a].astype("float32") + offset + 1000).where(clear & (data[a] > 0)) for a in ASSETS]
    return xr.concat(bands, dim="band").median("time"), load_s


def odc_run(products: Path, out: Path, months: str) -> dict:
    """The alternative: per month, odc-stac load + SCL mask + offsets + median, one GeoTIFF with rasterio."""
    import numpy as np
    import odc.stac  # noqa: F401  (imported before the clock, as ours is)
    import pystac
    import rasterio
    import xarray  # noqa: F401
    from odc.geo.geobox import GeoBox

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    items = list(pystac.ItemCollection.from_file(str(products / "stac" / "items.json")))
    with rasterio.open(truth_grid(products)) as like:
        profile = {"crs": like.crs, "transform": like.transform, "width": like.width, "height": like.height}
    geobox = GeoBox((profile["height"], profile["width"]), profile["transform"], profile["crs"])
    load_s = write_s = 0.0
    for month in map(int, months.split(",")):
        median, seconds = odc_month([i for i in items if i.datetime.month == month], geobox)
        load_s += seconds
        values = median.values  # (band, y, x) float32, NaN where no clear observation
        written = time.perf_counter()
        out_values = np.where(np.isnan(values), NODATA, np.clip(np.rint(values), -32767, 32767)).astype(np.int16)
        with rasterio.open(
            out / f"S2_{YEAR}-{month:02d}.tif", "w", driver="GTiff", count=10, dtype="int16", nodata=NODATA, **profile
        ) as dst:
            dst.write(out_values)
        write_s += time.perf_counter() - written
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "load_s": load_s,
        "mask_median_s": seconds - load_s - write_s,  # items parsed, mask, offsets, median
        "write_s": write_s,
        "rss_mb": peak_rss_mb(),
    }


def agreement(ours_dir: Path, odc_dir: Path, months: str) -> dict:
    """Where both composites have a value: the share agreeing within 1% reflectance on every 10 m band; and
    the shares of the grid valid in only one of them."""
    import numpy as np
    import rasterio

    both = agree = only_ours = only_odc = pixels = 0
    for month in map(int, months.split(",")):
        name = f"S2_{YEAR}-{month:02d}.tif"
        with rasterio.open(ours_dir / name) as a, rasterio.open(odc_dir / name) as b:
            mine, theirs = a.read().astype(np.int32), b.read().astype(np.int32)
        valid_ours, valid_odc = mine[0] != NODATA, theirs[0] != NODATA
        valid = valid_ours & valid_odc
        close = (np.abs(mine - theirs)[list(TEN_M)] <= TOLERANCE).all(axis=0)
        both, agree = both + int(valid.sum()), agree + int((close & valid).sum())
        only_ours += int((valid_ours & ~valid_odc).sum())
        only_odc += int((valid_odc & ~valid_ours).sum())
        pixels += valid.size
    return {
        "agree_10m_share": agree / max(both, 1),
        "both_valid_share": both / pixels,
        "only_ours_share": only_ours / pixels,
        "only_odc_share": only_odc / pixels,
    }


def worker(args: argparse.Namespace) -> int:
    """One mode in this (fresh) process; prints its row as JSON on the last line."""
    if args.worker == "ours":
        row = ours(args.products, args.out, args.months, args.blocks[0] if args.blocks else None, args.actors)
    else:
        row = odc_run(args.products, args.out, args.months)
    print(json.dumps(row))
    return 0


def run_mode(mode: str, products: Path, out: Path, args: argparse.Namespace, block: int | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--products", str(products), "--out", str(out)]
    command += ["--months", args.months]
    command += ["--blocks", str(block)] if block else []
    command += ["--actors", str(args.actors)] if args.actors else []
    # a local Ray of its own, which is part of what is measured; --smoke joins a given one (the tests' session's)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS" or args.smoke}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{mode} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(size: int, image_format: str, args: argparse.Namespace) -> list[dict]:
    """Both modes on one generated region; rows with the agreement and the speed ratio."""
    work = Path(tempfile.mkdtemp(prefix="h2crop_composite_bench_"))
    try:
        started = time.perf_counter()
        products = make_products(work, size, image_format)
        generate_s = time.perf_counter() - started
        theirs = run_mode("odc", products, work / "odc", args)
        mine = []
        # --smoke: ours at the last size only (each run starts a Ray: seconds of start-up)
        for block in (args.blocks or [None]) if size == args.sizes[-1] or not args.smoke else []:
            out = work / f"ours{block or ''}"
            mine.append(run_mode("ours", products, out, args, block) | agreement(out, work / "odc", args.months))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    km2 = size * size * 100 / 1e6
    common = {"size": size, "format": image_format, "km2": km2, "generate_s": generate_s}
    for row in mine:
        row.update(mode=f"h2crop composite, block {row['block']}", **common, km2_per_s=km2 / row["seconds"])
        row["vs_odc"] = theirs["seconds"] / row["seconds"]
    theirs.update(mode="odc-stac + xarray median", **common, km2_per_s=km2 / theirs["seconds"], vs_odc=1.0)
    return [*mine, theirs]


def print_table(rows: list[dict], cores: int, months: str, load: tuple) -> None:
    header = (
        f"{'size':>5s} {'format':9s} {'mode':28s} {'s':>7s} {'km²/s':>7s} {'vs odc':>7s} {'driver MB':>9s} "
        f"{'actor MB':>9s} {'agree':>6s}"
    )
    print(
        f"{cores} cores (load average {load[0]:.1f} at the start, {load[1]:.1f} at the end); months {months}; "
        "Ray's start-up is not in the rows; 'agree': valid in both, all 10 m bands within 1% reflectance"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        is_ours = "actors_rss_mb" in row
        driver = row["driver_rss_mb"] if is_ours else row["rss_mb"]
        actor = f"{max(row['actors_rss_mb'], default=0):.0f}" if is_ours else "-"
        agree = f"{row['agree_10m_share']:6.1%}" if is_ours else "-"
        print(
            f"{row['size']:5d} {FORMAT_NAMES[row['format']]:9s} {row['mode']:28s} {row['seconds']:7.1f} "
            f"{row['km2_per_s']:7.3f} {row['vs_odc']:6.2f}x {driver:9.0f} {actor:>9s} {agree:>6s}"
        )
    for row in rows:
        if "actors_rss_mb" in row:
            print(
                f"{row['size']} px, {row['format']}, block {row['block']}: {row['blocks']} block(s), {row['actors']} "
                f"actor(s); Ray start-up {row['ray_start_s']:.1f} s; scenes + actors + blocks {row['blocks_s']:.1f} s,"
                f" GeoTIFFs {row['write_s']:.1f} s; valid in both {row['both_valid_share']:.2%}, only in ours "
                f"{row['only_ours_share']:.2%}, only in odc's {row['only_odc_share']:.2%}"
            )
        else:
            print(
                f"{row['size']} px, {row['format']}: odc-stac load {row['load_s']:.1f} s, items + mask + offsets + median "
                f"{row['mask_median_s']:.1f} s, GeoTIFF {row['write_s']:.1f} s"
            )


def memory_growth(rows: list[dict], sizes: list[int]) -> dict:
    """Per format and mode: peak memory at the largest size over the smallest (driver / process, and the
    largest actor)."""
    growth = {}
    for image_format in dict.fromkeys(row["format"] for row in rows):
        for mode in dict.fromkeys(row["mode"] for row in rows):
            ends = {r["size"]: r for r in rows if r["format"] == image_format and r["mode"] == mode}
            if sizes[0] not in ends or sizes[-1] not in ends or sizes[0] == sizes[-1]:
                continue
            first, last = ends[sizes[0]], ends[sizes[-1]]
            key = "driver_rss_mb" if "driver_rss_mb" in first else "rss_mb"
            entry = {"process": last[key] / first[key]}
            if "actors_rss_mb" in first:
                entry["largest_actor"] = max(last["actors_rss_mb"]) / max(first["actors_rss_mb"])
                entry["largest_actor_added_mb"] = max(last["actors_rss_mb"]) - max(first["actors_rss_mb"])
            growth[f"{image_format}, {mode}"] = entry
            actor = (
                f", largest actor ×{entry['largest_actor']:.2f} ({entry['largest_actor_added_mb']:+.0f} MB)"
                if "largest_actor" in entry
                else ""
            )
            print(
                f"peak memory {sizes[-1]} px vs {sizes[0]} px, {image_format}, {mode}: ×{entry['process']:.2f}{actor}"
            )
    return growth


def target(rows: list[dict], growth: dict, size: int) -> dict:
    """The issue's target at the largest size: at least 1.0x the alternative's speed with flat memory: the
    driver's peak within 1.25x of the small size's, and the largest actor's grown by at most its GDAL block cache
    (``GDAL_CACHEMAX`` of each actor, 256 MB: decoded tiles kept across an actor's blocks, so an actor with more
    blocks to do fills more of it; with a 32 MB cache an actor's peak is the same after 1 block and after 4)."""
    from pipelines.compositing.worker import GDAL_CACHE_MB

    verdicts = {}
    for row in rows:
        if row["size"] != size or "actors_rss_mb" not in row:
            continue
        grown = growth.get(f"{row['format']}, {row['mode']}")
        flat = None  # not run at two sizes
        if grown:
            flat = grown["process"] <= 1.25 and grown["largest_actor_added_mb"] <= float(GDAL_CACHE_MB)
        holds = row["vs_odc"] >= 1.0 and flat
        verdicts[f"{row['format']}, {row['mode']}"] = {"vs_odc": row["vs_odc"], "flat_memory": flat, "holds": holds}
        memory = {True: "flat", False: "NOT flat", None: "not measured at two sizes"}[flat]
        print(
            f"target at {size} px, {row['format']}, {row['mode']}: {row['vs_odc']:.2f}x odc-stac's speed, memory "
            f"{memory} (driver within 1.25x, largest actor within +{GDAL_CACHE_MB} MB, its GDAL cache): "
            f"{'holds' if holds else 'does NOT hold'}"
        )
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[576, 1152],
        help="region sides in px, even multiples of 3 (default: both over one 512 block, so the largest actor holds a "
        "full block at both; 1152 px JPEG 2000 scenes have GDAL's 1024 px code-stream tiles, as ESA's)",
    )
    parser.add_argument(
        "--months",
        default="1-4",
        help="months to composite (default 1-4: January's two baselines, February's other UTM zone; each month "
        "adds the same work to both sides)",
    )
    parser.add_argument("--formats", nargs="+", choices=sorted(FORMAT_NAMES), default=["JP2", "GTiff"])
    parser.add_argument(
        "--blocks", type=int, nargs="+", help="h2crop composite --block, one run each (default: the command's)"
    )
    parser.add_argument("--actors", type=int, help="h2crop composite --actors (default: the command's)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs (seconds)")
    parser.add_argument("--json", type=Path, default=RESULTS / "composite_throughput.json")
    parser.add_argument("--worker", choices=("ours", "odc"), help=argparse.SUPPRESS)
    parser.add_argument("--products", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:
        args.sizes, args.months, args.formats = [96, 192], "1-2", ["GTiff"]
    if "JP2" in args.formats:
        from h2crop_core.data.synth.s2_products import image_driver

        if image_driver("auto") != "JP2OpenJPEG":
            print("the installed GDAL writes no JPEG 2000: GeoTIFF scenes only")
            args.formats = [f for f in args.formats if f != "JP2"] or ["GTiff"]
    if any(size % 6 for size in args.sizes):
        parser.error(f"--sizes {args.sizes}: each an even multiple of 3 (the generated region and its 20 m bands)")
    from pipelines.settings import parse_int_list

    args.months = ",".join(map(str, parse_int_list(args.months, "months", 1, 12)))
    cores, load = os.cpu_count() or 1, [os.getloadavg()[0]]
    rows = [row for fmt in args.formats for size in args.sizes for row in measure(size, fmt, args)]
    load.append(os.getloadavg()[0])
    print_table(rows, cores, args.months, tuple(load))
    growth = memory_growth(rows, args.sizes)
    verdicts = target(rows, growth, args.sizes[-1])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cores": cores, "load_average": load, "months": args.months, "results": rows}
    payload |= {"rss_growth": growth, "target": verdicts}
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
