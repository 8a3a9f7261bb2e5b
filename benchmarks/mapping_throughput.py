"""Region mapping at two sizes: ``h2crop map`` (Ray Data actor pool) against a plain single-process loop over
the same tiles, reader and model, with each process's peak memory.

    python benchmarks/mapping_throughput.py [--sizes 2016 4032] [--tile 192] [--json PATH] [--smoke]

For each size it generates a region and saves an (untrained: speed does not depend on the weights)
``tiny_crops_S2_H_P_jun`` checkpoint, then runs every mode in a fresh process, so that the peak resident
memory (``ru_maxrss``) each reports is its own:

* plain loop: one process, all cores as torch threads, read -> predict -> store the core, tile after tile,
  then the same COG writing as ``h2crop map``;
* Ray, N actors × C CPUs: ``map_region`` into a fresh folder with Ray already running (its start-up is
  reported apart), actor start-up (model load) included; the driver's peak memory and each actor's.

Flat memory means the peaks do not grow with the region (the readers hold one tile; the writer one tile
and GDAL's capped block cache). ``--user-files``: the region as a user has it (monthly S2 files, EnMAP in
EPSG:32632, warped window by window). ``--smoke``: 96 and 192 px regions in 96-px tiles as user files, one
Ray mode at 192 px (seconds).
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


def make_inputs(folder: Path, size: int, preset: str) -> tuple[Path, Path]:
    import torch

    from h2crop_core.checkpoint import save_checkpoint
    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.stats import compute_norm_stats
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.models import DualStreamModel, get_preset
    from h2crop_core.taxonomy import Taxonomy

    root = folder / "data"
    synthesize_dataset(root, 3, seed=1, region_size=size, progress=False)
    taxonomy = Taxonomy.from_csv(root / "cascade_labels.csv")
    stats = compute_norm_stats(DatasetIndex(root).split_paths("train"), progress=False)
    config = get_preset(preset, num_classes=taxonomy.num_classes)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(folder / "model.ckpt", DualStreamModel(config), config, taxonomy, stats)
    return root / "region", checkpoint


def map_inputs(region: Path, user: bool):
    """The region's rasters as they are (on one grid), or as a user has them (``write_user_files``: monthly
    S2 files, EnMAP warped from EPSG:32632 on the fly)."""
    from h2crop_core.mapping import MapInputs, inputs_from_region

    if not user:
        return inputs_from_region(region)
    files = region.parent / "user_files"
    return MapInputs.from_paths(files / "s2", next(files.glob("enmap_*.tif")), files / "prior.tif")


def plain_loop(checkpoint: Path, region: Path, settings, out: Path, user: bool = False) -> dict:
    """The simplest honest baseline: one process, tile after tile, every core as a torch thread."""
    import torch

    from h2crop_core.checkpoint import load_checkpoint
    from h2crop_core.mapping import TileStore, predict_tiles, write_level_cogs
    from pipelines.mapping.run import GDAL_CACHE_MB, region_reader_for, tile_grid

    os.environ["GDAL_CACHEMAX"] = GDAL_CACHE_MB  # as h2crop map: the same reader, the same cache
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    loaded = load_checkpoint(checkpoint)
    reader = region_reader_for(loaded, map_inputs(region, user), settings)
    tiles = tile_grid(loaded, reader, settings).tiles()
    store = TileStore(out, {"plain": True})
    for first in range(0, len(tiles), settings.batch_size):
        batch = tiles[first : first + settings.batch_size]
        results = predict_tiles(
            loaded.model, [reader.read(t) for t in batch], batch, decode=settings.decode, paths=loaded.taxonomy.paths
        )
        for tile, result in zip(batch, results):
            store.write(tile, result)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    write_level_cogs(store, tiles, loaded.config.levels, reader.profile(), loaded.taxonomy)
    return {
        "tiles": len(tiles),
        "predict_s": predict_s,
        "write_s": time.perf_counter() - start,
        "driver_rss_mb": peak_rss_mb(),
        "actors_rss_mb": [],
    }


def ray_run(checkpoint: Path, region: Path, settings, out: Path, user: bool = False) -> dict:
    from pipelines.mapping.run import map_region
    from pipelines.runtime.cluster import connect_ray, quiet_data_context

    start = time.perf_counter()
    connect_ray()
    quiet_data_context()
    ray_start_s = time.perf_counter() - start
    manifest = map_region(checkpoint, map_inputs(region, user), out, settings, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "tiles": manifest["tiles"],
        "predict_s": manifest["predict_s"],
        "write_s": summary["write_s"],
        "ray_start_s": ray_start_s,
        "driver_rss_mb": peak_rss_mb(),
        "actors_rss_mb": sorted(manifest["actors_peak_rss_mb"].values()),
    }


def worker(args: argparse.Namespace) -> int:
    """One mode in this (fresh) process; prints its row as JSON on the last line."""
    from pipelines.settings import MapSettings

    settings = MapSettings(tile=args.tile, batch_size=args.batch_size, actors=args.actors, cpus_per_actor=args.cpus)
    run = plain_loop if args.worker == "plain" else ray_run
    row = run(args.checkpoint, args.region, settings, args.out, args.user_files)
    print(json.dumps(row))
    return 0


def run_mode(
    mode: str, region: Path, checkpoint: Path, out: Path, args: argparse.Namespace, actors: int = 1, cpus: float = 1
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--region",
        str(region),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--tile",
        str(args.tile),
        "--batch-size",
        str(args.batch_size),
        "--actors",
        str(actors),
        "--cpus",
        str(cpus),
    ]
    command += ["--user-files"] if args.user_files else []
    # a local Ray of its own, which is part of what is measured; --smoke joins a given one (the tests' session's)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS" or args.smoke}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{mode} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    label = ("plain loop" if mode == "plain" else f"Ray, {actors} actor(s) × {cpus:g} CPU") + (
        ", user files" if args.user_files else ""
    )
    shutil.rmtree(out, ignore_errors=True)
    return {"mode": label, **row}


def print_table(rows: list[dict], cores: int) -> None:
    header = (
        f"{'size':>6s} {'mode':38s} {'tiles':>5s} {'km²/s':>7s} {'predict s':>9s} {'vs plain':>8s} "
        f"{'write s':>7s} {'driver MB':>9s} {'actor MB':>9s}"
    )
    print(f"{cores} cores; Ray's start-up is not in the rows; km²/s over predicting")
    print(header)
    print("-" * len(header))
    for row in rows:
        actors = "/".join(f"{v:.0f}" for v in row["actors_rss_mb"]) or "-"
        print(
            f"{row['size']:6d} {row['mode']:38s} {row['tiles']:5d} {row['km2_per_s']:7.3f} {row['predict_s']:9.1f} "
            f"{row['vs_plain']:7.2f}x {row['write_s']:7.1f} {row['driver_rss_mb']:9.0f} {actors:>9s}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[2016, 4032], help="sides of the generated regions (S2 pixels)"
    )
    parser.add_argument("--preset", default="tiny_crops_S2_H_P_jun", help="model of the generated checkpoint")
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--user-files",
        action="store_true",
        help="map the region as a user has it: monthly S2 files, EnMAP in EPSG:32632 warped on the fly",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs (seconds)")
    parser.add_argument("--json", type=Path, default=RESULTS / "mapping_throughput.json")
    parser.add_argument("--worker", choices=("plain", "ray"), help=argparse.SUPPRESS)
    for name, kind in (
        ("--region", Path),
        ("--checkpoint", Path),
        ("--out", Path),
        ("--actors", int),
        ("--cpus", float),
    ):
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.smoke:  # the user's layout: the warped path is the one with more to go wrong
        args.sizes, args.tile, args.user_files = [96, 192], 96, True
    cores = os.cpu_count() or 1
    rows = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="h2crop_map_bench_"))
        try:
            region, checkpoint = make_inputs(work, size, args.preset)
            if args.user_files:
                from h2crop_core.data.synth.user_files import write_user_files

                write_user_files(region, region.parent / "user_files")
            size_rows = [run_mode("plain", region, checkpoint, work / "plain", args, cpus=cores)]
            # --smoke: one Ray mode, at the last size only (each Ray process costs seconds of start-up)
            for actors in ([1] if size == args.sizes[-1] else []) if args.smoke else sorted({1, cores}):
                size_rows.append(
                    run_mode("ray", region, checkpoint, work / f"ray{actors}", args, actors=actors, cpus=cores / actors)
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        km2 = size * size * 100 / 1e6
        for row in size_rows:
            row.update(
                size=size,
                km2=km2,
                km2_per_s=km2 / row["predict_s"],
                vs_plain=size_rows[0]["predict_s"] / row["predict_s"],
            )
        rows += size_rows
    print_table(rows, cores)
    growth = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        ends = [r for r in rows if r["mode"] == mode and r["size"] in (args.sizes[0], args.sizes[-1])]
        if len(ends) < 2:
            continue
        first, last = ends
        growth[mode] = {
            "driver": last["driver_rss_mb"] / first["driver_rss_mb"],
            "actors": max(last["actors_rss_mb"], default=0) / max(first["actors_rss_mb"], default=1)
            if first["actors_rss_mb"]
            else None,
        }
        actors = f", actors ×{growth[mode]['actors']:.2f}" if growth[mode]["actors"] else ""
        print(
            f"peak memory {args.sizes[-1]}² vs {args.sizes[0]}², {mode}: driver ×{growth[mode]['driver']:.2f}{actors}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"cores": cores, "tile": args.tile, "results": rows, "rss_growth": growth}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
