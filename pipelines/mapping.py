"""Map a whole region with a trained checkpoint: tiles through a Ray Data actor pool (one model per actor),
then one Cloud-Optimized GeoTIFF per level.

    h2crop map --checkpoint run/best.ckpt --region data/region --output maps/region [--actors 2]

Finished tiles are kept (``OUTPUT/tiles``), so an interrupted run resumes where it stopped; the COGs and
``map.json`` appear only when every tile is done (see :mod:`h2crop_core.mapping.writer`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from h2crop_core.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from h2crop_core.mapping import RegionReader, TileGrid, TileStore, predict_tiles, write_level_cogs
from h2crop_core.mapping.region import region_identity
from h2crop_core.files import file_digest
from h2crop_core.mapping.writer import MAP_MANIFEST, MappingRecordError
from h2crop_core.models.heads import resolve_decode
from pipelines.settings import MapSettings


def region_reader_for(loaded: LoadedCheckpoint, region: str | Path) -> RegionReader:
    """A reader of ``region`` that produces exactly the inputs the checkpoint's model takes."""
    config = loaded.config
    return RegionReader(
        region, config.window, config.input_keys, loaded.stats,
        s2_bands=config.s2_bands, enmap_bands=config.enmap_bands, factor=config.enmap_upscale,
    )


class TilePredictor:
    """A Ray Data actor: loads the checkpoint once, then reads, predicts and stores batches of tiles."""

    def __init__(self, checkpoint: str, region: str, output: str, grid: dict, record: dict, settings: dict) -> None:
        self.settings = MapSettings(**settings)
        torch.set_num_threads(max(1, int(self.settings.cpus_per_actor)))
        self.device = "cuda" if self.settings.use_gpu else "cpu"
        overrides = {"precision": self.settings.precision} if self.settings.precision else {}
        if file_digest(Path(checkpoint)) != record["checkpoint_sha256"]:  # e.g. a training run replaced best.ckpt
            raise CheckpointError(f"{checkpoint} changed since this mapping run started; rerun h2crop map (into a new folder for the new model)")
        self.loaded = load_checkpoint(checkpoint, device=self.device, **overrides)
        self.reader = region_reader_for(self.loaded, region)
        self.tiles = {tile.index: tile for tile in TileGrid(**grid).tiles()}
        self.store = TileStore(output, record)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tiles = [self.tiles[int(index)] for index in batch["index"]]
        samples = [self.reader.read(tile) for tile in tiles]
        cores = predict_tiles(
            self.loaded.model, samples, tiles, decode=self.settings.decode, paths=self.loaded.taxonomy.paths, device=self.device
        )
        for tile, core in zip(tiles, cores):
            self.store.write(tile, core)
        return {"index": np.asarray(batch["index"], dtype=np.int64)}


@contextlib.contextmanager
def exclusive(output: Path):
    """Hold ``output/.lock`` for the run: a second ``h2crop map`` into the same folder is refused."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MappingRecordError(f"{output}: another h2crop map is writing here (it holds {output / '.lock'})") from None
        yield


def map_region(checkpoint: str | Path, region: str | Path, output: str | Path, settings: MapSettings | None = None, *, progress: bool = True) -> dict:
    """Map ``region`` with ``checkpoint`` into ``output``; resume if ``output`` holds this run's tiles.

    On a multi-node cluster the checkpoint, the region and ``output`` must be on storage every node reaches
    at the same path (the actors read and write them directly).

    Returns:
        The ``map.json`` content: files, levels, class names, grid, and tile counts and timings.
    """
    settings = settings or MapSettings()
    checkpoint, region, output = Path(checkpoint).resolve(), Path(region).resolve(), Path(output).resolve()
    loaded = load_checkpoint(checkpoint)  # on the driver too: a bad checkpoint or region fails here, not in an actor
    settings = replace(settings, decode=resolve_decode(settings.decode, loaded.config.levels))
    reader = region_reader_for(loaded, region)
    try:
        with exclusive(output):
            return _map_locked(loaded, checkpoint, reader, output, settings, progress)
    finally:
        reader.close()


def _map_locked(loaded: LoadedCheckpoint, checkpoint: Path, reader: RegionReader, output: Path, settings: MapSettings, progress: bool) -> dict:
    import ray
    from tqdm.auto import tqdm

    from pipelines.ray_runtime import check_resources, connect_ray, quiet_data_context

    started = time.perf_counter()
    height, width = reader.shape
    grid = TileGrid(height, width, tile=settings.tile, margin=settings.margin, factor=loaded.config.enmap_upscale)
    tiles = grid.tiles()
    record = {
        "checkpoint_sha256": file_digest(checkpoint),
        "region": region_identity(reader.folder, reader.manifest),
        "grid": grid.to_dict(),
        "decode": settings.decode,
        "precision": settings.precision or loaded.config.precision,
    }
    store = TileStore(output, record)
    if store.complete:
        print(f"[h2crop] {output / MAP_MANIFEST} exists: this map is complete (delete it to rebuild the COGs from the tiles)")
        return {**json.loads((output / MAP_MANIFEST).read_text()), "tiles_predicted": 0, "tiles_resumed": len(tiles)}
    finished = store.finished() & {tile.index for tile in tiles}
    todo = [tile.index for tile in tiles if tile.index not in finished]
    if finished:
        print(f"[h2crop] resuming: {len(finished)} of {len(tiles)} tiles already done in {store.tiles_dir}")
    if todo:
        connect_ray()
        quiet_data_context()
        per_actor = {"CPU": settings.cpus_per_actor, "GPU": 1 if settings.use_gpu else 0}
        check_resources(per_actor, settings.actors, "actor", "actor pool", "lower --actors or --cpus-per-actor, or drop --use-gpu")
        items = ray.data.from_items([{"index": index} for index in todo], override_num_blocks=max(1, len(todo) // settings.batch_size))
        predicted = items.map_batches(
            TilePredictor,
            fn_constructor_kwargs=dict(
                checkpoint=str(checkpoint), region=str(reader.folder), output=str(output), grid=grid.to_dict(), record=record, settings=asdict(settings)
            ),
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(size=settings.actors),
            num_cpus=settings.cpus_per_actor,
            num_gpus=1 if settings.use_gpu else 0,
        )
        with tqdm(total=len(tiles), initial=len(finished), desc="map", unit="tile", disable=not progress, dynamic_ncols=True) as bar:
            for batch in predicted.iter_batches(batch_size=None):
                bar.update(len(batch["index"]))
    predict_s = time.perf_counter() - started
    return write_level_cogs(
        store, tiles, loaded.config.levels, reader.profile(), loaded.taxonomy,
        extra={"tiles_resumed": len(finished), "tiles_predicted": len(todo), "predict_s": round(predict_s, 2),
               "total_s": round(time.perf_counter() - started, 2), "settings": asdict(settings)},
    )
