"""Map a whole region with a trained checkpoint: tiles through a Ray Data actor pool (one model per actor),
then one Cloud-Optimized GeoTIFF per level.

    h2crop map --checkpoint run/best.ckpt --region data/region --output maps/region [--actors 2]

Finished tiles are kept (``OUTPUT/tiles``), so an interrupted run resumes where it stopped; the COGs and
``map.json`` appear only when every tile is done (see :mod:`h2crop_core.mapping.writer`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from h2crop_core.checkpoint import LoadedCheckpoint, load_checkpoint
from h2crop_core.mapping import RegionReader, TileGrid, TileStore, predict_tiles, write_level_cogs
from h2crop_core.mapping.predict import DECODES
from h2crop_core.mapping.writer import MAP_MANIFEST


@dataclass
class MapSettings:
    """How to map (the model and the region come from the checkpoint and the region folder).

    Attributes:
        tile: model tile side in S2 pixels (a multiple of 96); the benchmark's is 192.
        margin: pixels at each inner tile edge given to the neighbour (edge predictions see less context).
        batch_size: tiles per forward pass.
        actors: model replicas (Ray actors) working in parallel.
        cpus_per_actor: CPUs reserved per actor, and its torch threads; default: this machine's cores
            shared among the actors.
        use_gpu: one GPU per actor.
        decode: ``consistent`` (most probable taxonomy path, levels always agree) or ``argmax``.
        precision: ``fp32``/``bf16`` to override the checkpoint's.
    """

    tile: int = 192
    margin: int = 16
    batch_size: int = 2
    actors: int = 1
    cpus_per_actor: float | None = None
    use_gpu: bool = False
    decode: str = "consistent"
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {self.decode!r}")
        if self.cpus_per_actor is None:
            self.cpus_per_actor = max(1.0, (os.cpu_count() or 1) / max(1, self.actors))
        if self.batch_size < 1 or self.actors < 1 or self.cpus_per_actor <= 0:
            raise ValueError("batch_size and actors must be at least 1 and cpus_per_actor positive")


def region_reader_for(loaded: LoadedCheckpoint, region: str | Path) -> RegionReader:
    """A reader of ``region`` that produces exactly the inputs the checkpoint's model takes."""
    config = loaded.config
    return RegionReader(
        region, config.window, config.input_keys, loaded.stats,
        s2_bands=config.s2_bands, enmap_bands=config.enmap_bands, factor=config.enmap_upscale,
    )


def file_digest(path: Path) -> str:
    """SHA-256 of a file (identifies the checkpoint in the resume record even if it is copied or moved)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TilePredictor:
    """A Ray Data actor: loads the checkpoint once, then reads, predicts and stores batches of tiles."""

    def __init__(self, checkpoint: str, region: str, output: str, grid: dict, record: dict, settings: dict) -> None:
        self.settings = MapSettings(**settings)
        torch.set_num_threads(max(1, int(self.settings.cpus_per_actor)))
        self.device = "cuda" if self.settings.use_gpu else "cpu"
        overrides = {"precision": self.settings.precision} if self.settings.precision else {}
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


def map_region(checkpoint: str | Path, region: str | Path, output: str | Path, settings: MapSettings | None = None, *, progress: bool = True) -> dict:
    """Map ``region`` with ``checkpoint`` into ``output``; resume if ``output`` holds this run's tiles.

    Returns:
        The ``map.json`` content: files, levels, class names, grid, and tile counts and timings.
    """
    import ray
    from tqdm.auto import tqdm

    from pipelines.train import connect_ray, quiet_data_context

    settings = settings or MapSettings()
    checkpoint, region, output = Path(checkpoint).resolve(), Path(region).resolve(), Path(output).resolve()
    started = time.perf_counter()
    loaded = load_checkpoint(checkpoint)  # on the driver too: a bad checkpoint or region fails here, not in an actor
    if settings.decode == "consistent" and len(loaded.config.levels) != 4:
        raise ValueError(f"consistent decoding needs a four-level model; {loaded.config.name} predicts levels {loaded.config.levels}: use --decode argmax")
    reader = region_reader_for(loaded, region)
    height, width = reader.shape
    grid = TileGrid(height, width, tile=settings.tile, margin=settings.margin, factor=loaded.config.enmap_upscale)
    tiles = grid.tiles()
    record = {
        "checkpoint_sha256": file_digest(checkpoint),
        "region": str(region),
        "grid": grid.to_dict(),
        "decode": settings.decode,
        "precision": settings.precision or loaded.config.precision,
    }
    store = TileStore(output, record)
    if store.complete:
        print(f"[h2crop] {output / MAP_MANIFEST} exists: this map is complete")
        import json

        return json.loads((output / MAP_MANIFEST).read_text())
    finished = store.finished() & {tile.index for tile in tiles}
    todo = [tile.index for tile in tiles if tile.index not in finished]
    if finished:
        print(f"[h2crop] resuming: {len(finished)} of {len(tiles)} tiles already done in {store.tiles_dir}")
    if todo:
        connect_ray()
        quiet_data_context()
        available = ray.cluster_resources()
        wanted = {"CPU": settings.actors * settings.cpus_per_actor, "GPU": settings.actors if settings.use_gpu else 0}
        short = {k: (v, available.get(k, 0)) for k, v in wanted.items() if v > available.get(k, 0)}
        if short:  # Ray would wait for them forever
            raise ValueError(
                "the actor pool needs " + ", ".join(f"{v:g} {k} (the Ray cluster has {have:g})" for k, (v, have) in short.items())
                + ": lower --actors or --cpus-per-actor"
            )
        items = ray.data.from_items([{"index": index} for index in todo], override_num_blocks=max(1, len(todo) // settings.batch_size))
        predicted = items.map_batches(
            TilePredictor,
            fn_constructor_kwargs=dict(
                checkpoint=str(checkpoint), region=str(region), output=str(output), grid=grid.to_dict(), record=record, settings=asdict(settings)
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
    levels = loaded.config.levels
    manifest = write_level_cogs(
        store, tiles, levels, reader.profile(), loaded.taxonomy,
        extra={"tiles_resumed": len(finished), "tiles_predicted": len(todo), "predict_s": round(predict_s, 2),
               "total_s": round(time.perf_counter() - started, 2), "settings": asdict(settings)},
    )
    reader.close()
    return manifest
