"""Region mapping throughput: ``h2crop map`` (Ray Data actor pool) against a plain single-process loop over
the same tiles, reader and model, in one run.

    python benchmarks/mapping_throughput.py [--region DIR --checkpoint CKPT] [--size 1008] [--json PATH] [--smoke]

Without ``--region``/``--checkpoint`` it generates a region and saves an (untrained: speed does not depend
on the weights) ``tiny_crops_S2_H_P_jun`` checkpoint. Rows:

* plain loop: one process, all cores as torch threads, read -> predict -> keep the core, tile after tile;
* Ray, N actors × C CPUs: ``map_region`` into a fresh folder, Ray already running (its start-up is reported
  apart), actor start-up (model load) included;
* COG writing (mosaic + overviews + quicklook) is the same code for every row and is timed once.

``--smoke``: a 192-px region in 96-px tiles (seconds; checks that every row still runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from h2crop_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from h2crop_core.mapping import TileGrid, TileStore, predict_tiles, write_level_cogs  # noqa: E402
from pipelines.mapping import map_region, region_reader_for  # noqa: E402
from pipelines.settings import MapSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def make_inputs(folder: Path, size: int, preset: str, samples: int = 8) -> tuple[Path, Path]:
    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.stats import compute_norm_stats
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.models import DualStreamModel, get_preset
    from h2crop_core.taxonomy import Taxonomy

    root = folder / "data"
    synthesize_dataset(root, samples, seed=1, region_size=size, progress=False)
    taxonomy = Taxonomy.from_csv(root / "cascade_labels.csv")
    stats = compute_norm_stats(DatasetIndex(root).split_paths("train"), progress=False)
    config = get_preset(preset, num_classes=taxonomy.num_classes)
    checkpoint = save_checkpoint(folder / "model.ckpt", DualStreamModel(config), config, taxonomy, stats)
    return root / "region", checkpoint


def plain_loop(checkpoint: Path, region: Path, settings: MapSettings, out: Path) -> dict:
    """The simplest honest baseline: one process, tile after tile, every core as a torch thread."""
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    loaded = load_checkpoint(checkpoint, **({"precision": settings.precision} if settings.precision else {}))
    reader = region_reader_for(loaded, region)
    tiles = TileGrid(*reader.shape, tile=settings.tile, margin=settings.margin, factor=loaded.config.enmap_upscale).tiles()
    store = TileStore(out, {"plain": True})
    for first in range(0, len(tiles), settings.batch_size):
        batch = tiles[first : first + settings.batch_size]
        cores = predict_tiles(loaded.model, [reader.read(t) for t in batch], batch, decode=settings.decode, paths=loaded.taxonomy.paths)
        for tile, core in zip(batch, cores):
            store.write(tile, core)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    write_level_cogs(store, tiles, loaded.config.levels, reader.profile(), loaded.taxonomy)
    return {"mode": "plain loop", "tiles": len(tiles), "predict_s": predict_s, "cog_s": time.perf_counter() - start}


def ray_run(checkpoint: Path, region: Path, settings: MapSettings, out: Path) -> dict:
    start = time.perf_counter()
    manifest = map_region(checkpoint, region, out, settings, progress=False)
    total = time.perf_counter() - start
    return {"mode": f"Ray, {settings.actors} actor(s) × {settings.cpus_per_actor:g} CPU", "tiles": manifest["tiles"],
            "predict_s": manifest["predict_s"], "total_s": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--size", type=int, default=1008, help="side of the generated region (S2 pixels)")
    parser.add_argument("--preset", default="tiny_crops_S2_H_P_jun", help="model of the generated checkpoint")
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs (seconds)")
    parser.add_argument("--json", type=Path, default=RESULTS / "mapping_throughput.json")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.tile = 192, 96

    from pipelines.ray_runtime import connect_ray, quiet_data_context

    work = Path(tempfile.mkdtemp(prefix="h2crop_map_bench_"))
    try:
        if args.region and args.checkpoint:
            region, checkpoint = args.region, args.checkpoint
        else:
            region, checkpoint = make_inputs(work, args.size, args.preset, samples=3 if args.smoke else 8)
        cores = os.cpu_count() or 1
        rows = [plain_loop(checkpoint, region, MapSettings(tile=args.tile, batch_size=args.batch_size), work / "plain")]
        start = time.perf_counter()
        connect_ray()
        quiet_data_context()
        ray_start_s = time.perf_counter() - start
        for actors in sorted({1, cores}):
            settings = MapSettings(tile=args.tile, batch_size=args.batch_size, actors=actors, cpus_per_actor=cores / actors)
            rows.append(ray_run(checkpoint, region, settings, work / f"ray{actors}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["predict_s"]
    print(f"{rows[0]['tiles']} tiles of {args.tile} px, {cores} cores; Ray start-up {ray_start_s:.1f} s (not in the rows)")
    header = f"{'mode':28s} {'tiles/s':>8s} {'seconds':>8s} {'vs plain':>8s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        row["tiles_per_s"] = row["tiles"] / row["predict_s"]
        print(f"{row['mode']:28s} {row['tiles_per_s']:8.2f} {row['predict_s']:8.1f} {base / row['predict_s']:7.2f}x")
    print(f"COG writing (4 levels, overviews, quicklook): {rows[0]['cog_s']:.1f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"ray_start_s": ray_start_s, "results": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
