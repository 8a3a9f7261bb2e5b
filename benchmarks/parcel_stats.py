"""Per-parcel statistics: ``h2crop parcels`` (batches of parcels, one rasterize per map block) against the
simplest honest baseline, one masked read per parcel (``rasterio.mask.mask``), and its memory as the number of
parcels grows.

    python benchmarks/parcel_stats.py [--size 4032] [--cells 16 4] [--baseline-parcels 2000] [--json PATH] [--smoke]

A generated map (``--size``² px, random taxonomy paths in 24-px blocks) is covered by square parcels on a
grid of ``--cells`` px (jittered corners, so no parcel edge lies on pixel edges), one GeoPackage per cell
size: 16-px cells give ~63k parcels and 4-px cells ~1M at 4,032². Each ``h2crop parcels`` run is its own
process, so its peak memory (``VmHWM``) is its own; the baseline runs on the first ``--baseline-parcels``
parcels of the largest file. ``--smoke``: a 384-px map, seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
CRS = "EPSG:32631"


def make_map(folder: Path, size: int) -> Path:
    from affine import Affine

    from h2crop_core.data.synth import generate_taxonomy
    from h2crop_core.mapping import TileGrid, TileStore, write_level_cogs
    from h2crop_core.mapping.results import TileResult

    taxonomy = generate_taxonomy(seed=0)
    rng = np.random.default_rng(0)
    grid = TileGrid(size, size, tile=192, margin=0)
    store = TileStore(folder, {"benchmark": size})
    for tile in grid.tiles():  # tile by tile: the map is never held whole
        row0, row1, col0, col1 = tile.core
        blocks = rng.integers(1, len(taxonomy.paths), size=((row1 - row0) // 24 + 1, (col1 - col0) // 24 + 1))
        leaf = np.kron(blocks, np.ones((24, 24), np.int64))[: row1 - row0, : col1 - col0]
        ids = np.moveaxis(taxonomy.paths[leaf], -1, 0).astype(np.uint8)
        store.write(tile, TileResult(ids, rng.integers(1, 256, ids.shape, dtype=np.uint8)))
    transform = Affine(10, 0, 600_000, 0, -10, 5_000_000)
    write_level_cogs(
        store, grid.tiles(), (1, 2, 3, 4), {"crs": CRS, "transform": transform, "height": size, "width": size}, taxonomy
    )
    return folder


def make_parcels(path: Path, size: int, cell: int) -> int:
    """Square parcels on a ``cell``-px grid over the map, corners jittered by up to a tenth of a cell."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(cell)
    rows, cols = np.mgrid[0 : size // cell, 0 : size // cell]
    x0 = 600_000 + 10 * cell * cols.ravel() + rng.uniform(0.5, cell, rows.size)
    y0 = 5_000_000 - 10 * cell * rows.ravel() - rng.uniform(0.5, cell, rows.size)
    side = 10 * cell * 0.8
    boxes = shapely.box(x0, y0 - side, x0 + side, y0)
    gpd.GeoDataFrame({"parcel": np.arange(len(boxes))}, geometry=boxes, crs=CRS).to_file(path, driver="GPKG")
    return len(boxes)


def run_parcels(map_dir: Path, parcels: Path, output: Path) -> dict:
    """``h2crop parcels`` in its own process; its wall time and peak memory."""
    code = (
        "import json, sys, time; from h2crop_core.memory import peak_rss_mb; from h2crop_core.mapping.parcels import parcel_statistics; "
        "t = time.perf_counter(); r = parcel_statistics(*sys.argv[1:4], id_column='parcel', progress=False); "
        "print(json.dumps({**r, 'seconds': time.perf_counter() - t, 'peak_rss_mb': peak_rss_mb()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(map_dir), str(parcels), str(output)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode:
        raise RuntimeError(f"h2crop parcels failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline(map_dir: Path, parcels: Path, count: int) -> dict:
    """One ``rasterio.mask.mask`` per parcel (pixel centres inside, as h2crop's), majority by bincount."""
    import geopandas as gpd
    import rasterio
    import rasterio.mask

    frame = gpd.read_file(parcels, max_features=count)
    start = time.perf_counter()
    majority = []
    with rasterio.open(map_dir / "level4.tif") as src:
        for geometry in frame.geometry:
            pixels, _ = rasterio.mask.mask(src, [geometry], crop=True, filled=False)
            values = pixels.compressed()
            values = values[values != src.nodata]
            majority.append(int(np.bincount(values).argmax()) if len(values) else -1)
    return {"parcels": len(frame), "seconds": time.perf_counter() - start, "majority": majority}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4032, help="map side in pixels")
    parser.add_argument(
        "--cells", type=int, nargs="+", default=[16, 4], help="parcel grid spacings in pixels (smaller: more parcels)"
    )
    parser.add_argument("--baseline-parcels", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="a 384-px map: check that the benchmark runs (seconds)")
    parser.add_argument("--json", type=Path, default=RESULTS / "parcel_stats.json")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.cells, args.baseline_parcels = 384, [16, 8], 200
    work = Path(tempfile.mkdtemp(prefix="h2crop_parcels_bench_"))
    rows = []
    try:
        map_dir = make_map(work / "map", args.size)
        for cell in sorted(args.cells, reverse=True):
            path = work / f"parcels_{cell}.gpkg"
            count = make_parcels(path, args.size, cell)
            row = run_parcels(map_dir, path, work / f"out_{cell}.parquet")
            rows.append(
                {
                    "cell_px": cell,
                    "parcels": count,
                    "seconds": row["seconds"],
                    "parcels_per_s": count / row["seconds"],
                    "peak_rss_mb": row["peak_rss_mb"],
                }
            )
        import geopandas as gpd

        base = baseline(map_dir, path, args.baseline_parcels)
        ours = gpd.read_parquet(work / f"out_{min(args.cells)}.parquet").head(base["parcels"])
        agree = float(np.mean(ours["level4_id"].fillna(-1).astype(int).to_numpy() == np.array(base["majority"])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_rate = base["parcels"] / base["seconds"]
    print(
        f"map {args.size}² px; baseline: one rasterio.mask.mask per parcel on {base['parcels']} parcels, "
        f"{base_rate:.0f} parcels/s (agrees with h2crop on {100 * agree:.1f}%)"
    )
    header = f"{'cell px':>7s} {'parcels':>9s} {'seconds':>8s} {'parcels/s':>10s} {'vs baseline':>11s} {'peak MB':>8s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        row["vs_baseline"] = row["parcels_per_s"] / base_rate
        print(
            f"{row['cell_px']:7d} {row['parcels']:9d} {row['seconds']:8.1f} {row['parcels_per_s']:10.0f} "
            f"{row['vs_baseline']:10.1f}x {row['peak_rss_mb']:8.0f}"
        )
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak memory with {rows[-1]['parcels']} parcels against {rows[0]['parcels']}: ×{growth:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "size": args.size,
                "baseline": {**base, "majority": None, "agreement": agree},
                "results": rows,
                "rss_growth": growth,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
