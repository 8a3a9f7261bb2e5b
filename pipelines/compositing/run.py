"""Monthly Sentinel-2 composites of a region from L2A scenes: blocks through a pool of Ray actors (each keeps
the files it reads open across blocks), then one GeoTIFF per month.

    h2crop composite --scenes scenes/ --year 2022 --like region/label.tif --output composites/2022
    h2crop composite --scenes items.json --year 2022 --bounds 600000 4990000 610000 5000000 --crs EPSG:32631 --output c

Finished blocks are kept (``OUTPUT/blocks``), so an interrupted run resumes where it stopped; the monthly files
and ``composite.json`` appear only when every block is done (see :mod:`h2crop_core.compositing.store`). The
driver writes every block it receives, so on a cluster only the scenes need to be on storage every node
reaches (a shared disk, or the URLs of a STAC catalog); the output stays on the driver's machine.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from h2crop_core.compositing.grid import Block, TargetGrid
from h2crop_core.compositing.options import CompositeOptions
from h2crop_core.compositing.store import (
    MANIFEST,
    BlockStore,
    CompositeRecordError,
    clear_outputs,
    count_file,
    month_file,
    write_composites,
    write_manifest,
)
from h2crop_core.files import exclusive_folder
from h2crop_core.mapping.region import RegionError
from h2crop_core.memory import peak_rss_mb
from h2crop_core.products.harmonise import S2_CONVENTION
from h2crop_core.products.scenes import find_scenes
from h2crop_core.products.sentinel2 import MODEL_BANDS, Scene
from pipelines.compositing.worker import BlockWorker
from pipelines.settings import CompositeSettings


def grid_scenes(scenes: list[Scene], grid: TargetGrid, months: tuple[int, ...]) -> list[Scene]:
    """The scenes of the chosen months whose footprint meets the grid."""
    from h2crop_core.compositing.block import overlaps

    whole = Block(0, 0, 0, grid.height, grid.width)
    return [s for s in scenes if s.month in months and overlaps(s, grid, whole)]


def composite_record(scenes: list[Scene], grid: TargetGrid, year: int, settings: CompositeSettings) -> dict:
    """What defines a compositing run: a rerun with other scenes (added, removed, reprocessed), another grid or
    other settings is refused rather than mixed in. Scenes are named by id, time and offsets (not hashed:
    a year of scenes is hundreds of gigabytes)."""
    return {
        "year": year,
        "months": list(settings.month_list),
        "grid": grid.to_dict(),
        "block": settings.block,
        "options": asdict(_options(settings)),
        "convention": S2_CONVENTION,
        "scenes": [{"name": s.id, "time": s.time, "offsets": s.offsets} for s in scenes],
    }


def _options(settings: CompositeSettings) -> CompositeOptions:
    return CompositeOptions(method=settings.method, drop=settings.drop_classes, dilate=settings.dilate)


def composite_region(
    scenes_source: str,
    year: int,
    output: str | Path,
    grid: TargetGrid,
    settings: CompositeSettings,
    *,
    progress: bool = True,
) -> dict:
    """Composite the scenes of ``year`` onto ``grid`` into ``output``; resume if it holds this run's blocks.

    Returns:
        The ``composite.json`` content.
    """
    from rasterio.warp import transform_bounds

    started = time.perf_counter()
    wgs84 = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    found = find_scenes(scenes_source, collection=settings.collection or None, year=year, bbox=wgs84)
    scenes = grid_scenes(found, grid, settings.month_list)
    if not scenes:
        raise RegionError(
            f"{scenes_source}: none of its {len(found)} scenes of {year} in months {settings.months} covers the grid "
            f"({grid.crs}, bounds {', '.join(f'{v:.0f}' for v in grid.bounds)})"
        )
    folder = Path(output).resolve()
    with exclusive_folder(folder, "h2crop composite", CompositeRecordError):
        if settings.overwrite and clear_outputs(folder):
            print(f"[h2crop] --overwrite: deleted the earlier composite's blocks and files in {folder}")
        store = BlockStore(folder, composite_record(scenes, grid, year, settings))
        if store.complete:
            print(f"[h2crop] {folder / MANIFEST} exists: this composite is complete (--overwrite makes it again)")
            stored = json.loads((folder / MANIFEST).read_text())
            return {**stored, "blocks_made": 0, "blocks_resumed": stored["blocks"]}
        return _composite_locked(store, scenes, grid, year, settings, progress, started)


def _composite_locked(
    store: BlockStore,
    scenes: list[Scene],
    grid: TargetGrid,
    year: int,
    settings: CompositeSettings,
    progress: bool,
    started: float,
) -> dict:
    blocks = grid.blocks(settings.block)
    finished = store.finished() & {b.index for b in blocks}
    todo = [b for b in blocks if b.index not in finished]
    if finished:
        print(f"[h2crop] resuming: {len(finished)} of {len(blocks)} blocks already done in {store.blocks_dir}")
    actors = _run_blocks(store, scenes, grid, todo, len(finished), len(blocks), settings, progress) if todo else {}
    made_s = time.perf_counter() - started
    months = write_composites(store, grid, blocks, year, settings.month_list)
    manifest = {
        "files": {str(m): month_file(year, m) for m in settings.month_list},
        "counts": {str(m): count_file(year, m) for m in settings.month_list},
        "bands": list(MODEL_BANDS),
        "convention": S2_CONVENTION,
        "year": year,
        "grid": grid.to_dict(),
        "months": {str(m): months[m] | {"scenes": sum(s.month == m for s in scenes)} for m in settings.month_list},
        "scenes": [s.to_dict() for s in scenes],
        "settings": asdict(settings),
        "blocks": len(blocks),
        "blocks_made": len(todo),
        "blocks_resumed": len(finished),
        "seconds": round(made_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "actors_peak_rss_mb": {str(pid): round(rss, 1) for pid, rss in sorted(actors.items())},
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_manifest(store.folder, manifest)
    # the blocks hold the composites uncompressed (2.4 GB per 100 km² for a year): once the monthly files and
    # composite.json are written, nothing needs them
    shutil.rmtree(store.blocks_dir, ignore_errors=True)
    return manifest


def _run_blocks(
    store: BlockStore,
    scenes: list[Scene],
    grid: TargetGrid,
    todo: list[Block],
    done: int,
    total: int,
    settings: CompositeSettings,
    progress: bool,
) -> dict[int, float]:
    """Composite ``todo`` on a pool of actors, writing each block as it arrives; returns each actor's peak
    resident memory (MB) by pid."""
    import ray
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    from pipelines.runtime.cluster import connect_ray

    connect_ray()
    count = settings.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    count = min(count, len(todo))
    worker = ray.remote(num_cpus=1)(BlockWorker)
    payload = ([s.to_dict() for s in scenes], grid.to_dict(), settings.month_list, asdict(_options(settings)))
    actors = [worker.remote(*payload) for _ in range(count)]
    peaks: dict[int, float] = {}
    bar = tqdm(total=total, initial=done, desc="composite", unit="block", disable=not progress, dynamic_ncols=True)
    try:
        # the pool hands a block to an actor only when it is free: at most one block per actor in flight
        results = ActorPool(actors).map_unordered(lambda actor, block: actor.run.remote(block), todo)
        for index, result, _seconds, pid, rss in results:
            store.write(index, result["data"], result["count"], result["scenes"])
            peaks[pid] = max(peaks.get(pid, 0.0), rss)
            bar.update(1)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return peaks
