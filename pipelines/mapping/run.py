"""Map a whole region with a trained checkpoint: tiles through a Ray Data actor pool (one model per actor),
then Cloud-Optimized GeoTIFFs of each level's classes and confidence.

    h2crop map --checkpoint run/best.ckpt --s2 s2_2023/ --enmap enmap_l2a.tif [--prior crops_2022.tif] --output maps/x
    h2crop map --checkpoint run/best.ckpt --region data/region --output maps/region [--actors 2]

Finished tiles are kept (``OUTPUT/tiles``), so an interrupted run resumes where it stopped; the COGs,
``summary.json`` and ``map.json`` appear only when every tile is done (see :mod:`h2crop_core.mapping.writer`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from h2crop_core.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from h2crop_core.files import exclusive_folder, file_digest, write_text_atomic
from h2crop_core.mapping import MapInputs, RegionReader, TileGrid, TileStore, predict_tiles, write_level_cogs
from h2crop_core.mapping.drift import input_drift
from h2crop_core.mapping.writer import (
    MAP_MANIFEST,
    OUTPUT_PATTERNS,
    RECORD,
    SUMMARY,
    MappingRecordError,
    RemoteTileWriter,
    clear_outputs,
)
from h2crop_core.memory import peak_rss_mb
from h2crop_core.models.heads import resolve_decode
from h2crop_core.products.contract import check_s2_inputs
from h2crop_core.runlock import RunLock
from h2crop_core.storage import Remote, is_uri
from pipelines.settings import MapSettings

#: GDAL's block cache (MB) in the driver and each actor: its default, 5% of RAM, lets memory grow with the
#: region for no gain (every window is read once)
GDAL_CACHE_MB = "128"
#: the inputs' SHA-256, cached in the output folder by size and modification time
DIGESTS = ".input_digests.json"


def region_reader_for(loaded: LoadedCheckpoint, inputs: MapInputs, settings: MapSettings | None = None) -> RegionReader:
    """A reader of ``inputs`` that produces exactly the inputs the checkpoint's model takes (an EnMAP
    product's bands picked by the contract's wavelengths; a checkpoint without a contract: by index)."""
    config, contract = loaded.config, loaded.contract
    return RegionReader(
        inputs,
        config.window,
        config.input_keys,
        loaded.stats,
        s2_bands=config.s2_bands,
        enmap_bands=config.enmap_bands,
        factor=config.enmap_upscale,
        resampling=(settings or MapSettings()).enmap_resampling,
        enmap_wavelengths=(contract.enmap_wavelengths_nm or None) if contract else None,
    )


def tile_grid(loaded: LoadedCheckpoint, reader: RegionReader, settings: MapSettings) -> TileGrid:
    return TileGrid(*reader.shape, tile=settings.tile, margin=settings.overlap // 2, factor=loaded.config.enmap_upscale)


class TilePredictor:
    """A Ray Data actor: loads the checkpoint once, then reads, predicts and stores batches of tiles."""

    def __init__(
        self, checkpoint: str, inputs: dict, output: str, record: dict, settings: dict, mirror: str | None = None
    ) -> None:
        os.environ["GDAL_CACHEMAX"] = GDAL_CACHE_MB
        self.settings = MapSettings(**settings)
        # the actor's own node's cores, not the driver's: on a cluster they differ
        torch.set_num_threads(max(1, min(int(self.settings.cpus_per_actor), os.cpu_count() or 1)))
        self.device = "cuda" if self.settings.use_gpu else "cpu"
        overrides = {"precision": self.settings.precision} if self.settings.precision else {}
        if file_digest(Path(checkpoint)) != record["checkpoint_sha256"]:  # e.g. a training run replaced best.ckpt
            raise CheckpointError(
                f"{checkpoint} changed since this mapping run started; rerun h2crop map (into a new folder for the new model)"
            )
        self.loaded = load_checkpoint(checkpoint, device=self.device, **overrides)
        self.reader = region_reader_for(self.loaded, MapInputs.from_dict(inputs), self.settings)
        self.tiles = {tile.index: tile for tile in tile_grid(self.loaded, self.reader, self.settings).tiles()}
        # a bucket output: tiles go straight to it, nothing stays on this actor's node
        self.store = RemoteTileWriter(mirror, record) if mirror else TileStore(output, record)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tiles = [self.tiles[int(index)] for index in batch["index"]]
        samples = [self.reader.read(tile) for tile in tiles]
        results = predict_tiles(
            self.loaded.model,
            samples,
            tiles,
            decode=self.settings.decode,
            paths=self.loaded.taxonomy.paths,
            device=self.device,
        )
        for tile, result in zip(tiles, results):
            self.store.write(tile, result)
        count = len(tiles)
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "pid": np.full(count, os.getpid()),
            "peak_rss_mb": np.full(count, peak_rss_mb()),
        }


def exclusive(output: Path):
    """Hold ``output/.lock`` for the run: a second ``h2crop map`` into the same folder is refused."""
    return exclusive_folder(output, "h2crop map", MappingRecordError)


def map_region(
    checkpoint: str | Path,
    inputs: MapInputs,
    output: str | Path,
    settings: MapSettings | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Map ``inputs`` with ``checkpoint`` into ``output``; resume if ``output`` holds this run's tiles.

    Every check (checkpoint, rasters, grid, resources) runs before any tile. On a multi-node cluster the
    checkpoint and the inputs must be on storage every node reaches at the same path (the actors read them
    directly), and so must ``output`` unless it is an object-store URI (``s3://bucket/maps/x``): then tiles
    go to the bucket as they finish, the maps are assembled in a local staging folder and uploaded,
    ``map.json`` last, and a rerun from any machine resumes from the bucket's tiles.

    Returns:
        The ``map.json`` content: files, levels, class names, grid, and tile counts and timings (and, for a
        URI, ``staging``: the local folder holding the same files).
    """
    os.environ["GDAL_CACHEMAX"] = GDAL_CACHE_MB
    settings = settings or MapSettings()
    checkpoint = Path(checkpoint).resolve()
    loaded = load_checkpoint(checkpoint)  # on the driver too: a bad checkpoint or input fails here, not in an actor
    settings = replace(settings, decode=resolve_decode(settings.decode, loaded.config.levels))
    if loaded.contract is not None:  # named bands or a convention tag that contradict the contract: refused
        check_s2_inputs(inputs.s2, loaded.contract)
    reader = region_reader_for(loaded, inputs, settings)
    try:
        if not is_uri(output):
            folder = Path(output).resolve()
            with exclusive(folder):
                return _map_locked(loaded, checkpoint, inputs, reader, folder, settings, progress)
        remote, staging = Remote(str(output)), staging_folder(str(output), settings)
        with RunLock(str(output), "map", "mapping") as lock, exclusive(staging):
            sync_staging(remote, staging, overwrite=settings.overwrite)
            manifest = _map_locked(
                loaded,
                checkpoint,
                inputs,
                reader,
                staging,
                replace(settings, overwrite=False),
                progress,
                mirror=str(output),
            )
            lock.check()  # the bucket is still this run's (a storage outage may have handed it to another)
            if manifest.get("tiles_predicted") or not remote.exists(MAP_MANIFEST):  # a finished map is not re-sent
                publish(staging, remote, manifest)
            return {**manifest, "staging": str(staging)}
    finally:
        reader.close()


def staging_folder(output: str, settings: MapSettings) -> Path:
    """Where an object-store output is assembled: ``--staging``, or a folder in the user's cache named by
    the URI (a rerun on this machine reuses what it holds)."""
    if settings.staging:
        return Path(settings.staging).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "h2crop" / "maps" / hashlib.sha256(output.encode()).hexdigest()[:16]


def sync_staging(remote: Remote, staging: Path, *, overwrite: bool) -> None:
    """Make the staging folder the bucket's state (the bucket is the truth): the record and the finished tiles,
    or, for a finished map, its summary and ``map.json`` (its maps stay in the bucket: a rerun neither
    downloads nor re-uploads them); ``overwrite`` first deletes the bucket's earlier outputs."""
    if overwrite:
        doomed = [n for n in remote.names() if any(fnmatch.fnmatch(n, p) for p in OUTPUT_PATTERNS)] + [
            f"tiles/{n}" for n in remote.names("tiles")
        ]
        for name in doomed:
            remote.delete(name)
        if doomed:
            print(f"[h2crop] --overwrite: deleted the earlier mapping run's {len(doomed)} files in {remote.location}")
    staging.mkdir(parents=True, exist_ok=True)
    names = remote.names()
    stored = remote.read_text(RECORD) if RECORD in names else None
    local = (staging / RECORD).read_text() if (staging / RECORD).is_file() else None
    if stored != local:  # another run's record, or none: the staging folder starts over from the bucket
        clear_outputs(staging)
        if stored is not None:
            write_text_atomic(staging / RECORD, stored)
    elif MAP_MANIFEST not in names:  # the bucket's map was deleted (to rebuild it): so is the staged one
        (staging / MAP_MANIFEST).unlink(missing_ok=True)
    if MAP_MANIFEST in names:  # finished: its summary and map.json (last) say so; its maps stay in the bucket
        for name in (SUMMARY, MAP_MANIFEST):
            remote.download(name, staging / name)
    else:
        fetch_tiles(remote, staging)


def fetch_tiles(remote: Remote, staging: Path) -> int:
    """Download the bucket's tiles the staging folder lacks (written on other nodes, or by an earlier run)."""
    have = {p.name for p in (staging / "tiles").glob("*.npz")}
    missing = sorted(n for n in remote.names("tiles") - have if n.endswith(".npz"))
    for name in missing:
        remote.download(f"tiles/{name}", staging / "tiles" / name)
    return len(missing)


def publish(staging: Path, remote: Remote, manifest: dict) -> None:
    """Upload a finished map's files, ``map.json`` last: a bucket without it never holds a finished map."""
    for name in sorted(set(manifest["files"].values())):
        remote.upload(staging / name, name)
    remote.upload(staging / MAP_MANIFEST, MAP_MANIFEST)


def _predict_remaining(
    checkpoint: Path,
    inputs: MapInputs,
    output: Path,
    record: dict,
    todo: list[int],
    done: int,
    total: int,
    settings: MapSettings,
    progress: bool,
    mirror: str | None = None,
) -> dict[int, float]:
    """Run the tiles ``todo`` through the actor pool; return each actor's peak resident memory (MB) by pid."""
    import ray
    from tqdm.auto import tqdm

    from pipelines.runtime.cluster import connect_ray, quiet_data_context

    connect_ray()
    quiet_data_context()
    settings = check_actor_pool(settings)
    items = ray.data.from_items(
        [{"index": index} for index in todo], override_num_blocks=max(1, len(todo) // settings.batch_size)
    )
    predicted = items.map_batches(
        TilePredictor,
        fn_constructor_kwargs=dict(
            checkpoint=str(checkpoint),
            inputs=inputs.to_dict(),
            output=str(output),
            record=record,
            settings=asdict(settings),
            mirror=mirror,
        ),
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        num_cpus=settings.cpus_per_actor,
        num_gpus=1 if settings.use_gpu else 0,
    )
    actors: dict[int, float] = {}
    with tqdm(total=total, initial=done, desc="map", unit="tile", disable=not progress, dynamic_ncols=True) as bar:
        for batch in predicted.iter_batches(batch_size=None):
            bar.update(len(batch["index"]))
            for pid, rss in zip(batch["pid"], batch["peak_rss_mb"]):
                actors[int(pid)] = max(actors.get(int(pid), 0.0), float(rss))
    return actors


def _map_locked(
    loaded: LoadedCheckpoint,
    checkpoint: Path,
    inputs: MapInputs,
    reader: RegionReader,
    output: Path,
    settings: MapSettings,
    progress: bool,
    mirror: str | None = None,
) -> dict:
    started = time.perf_counter()
    grid = tile_grid(loaded, reader, settings)
    tiles = grid.tiles()
    drift = input_drift(reader, tiles, loaded.stats, loaded.contract, settings.drift_sigmas)
    if drift:
        print(f"[h2crop] warning: {drift}", flush=True)
    record = {
        "checkpoint_sha256": file_digest(checkpoint),
        "inputs": input_identity(inputs, loaded.config.input_keys, reader.months, output),
        "grid": grid.to_dict(),
        "decode": settings.decode,
        "precision": settings.precision or loaded.config.precision,
        "enmap_resampling": settings.enmap_resampling if "enmap" in loaded.config.input_keys else None,
    }
    if settings.overwrite and clear_outputs(output):
        print(f"[h2crop] --overwrite: deleted the earlier mapping run's tiles and maps in {output}")
    store = TileStore(output, record, mirror)
    if store.complete:
        print(
            f"[h2crop] {output / MAP_MANIFEST} exists: this map is complete (delete it to rebuild the COGs from the tiles)"
        )
        return {**json.loads((output / MAP_MANIFEST).read_text()), "tiles_predicted": 0, "tiles_resumed": len(tiles)}
    finished = store.finished() & {tile.index for tile in tiles}
    todo = [tile.index for tile in tiles if tile.index not in finished]
    if finished:
        print(f"[h2crop] resuming: {len(finished)} of {len(tiles)} tiles already done in {store.tiles_dir}")
    actors = (
        _predict_remaining(
            checkpoint, inputs, output, record, todo, len(finished), len(tiles), settings, progress, mirror
        )
        if todo
        else {}
    )
    if mirror:
        fetch_tiles(store.remote, output)
    predict_s = time.perf_counter() - started
    timings = {"seconds": round(predict_s, 2), "tiles_predicted": len(todo), "tiles_resumed": len(finished)}
    manifest = write_level_cogs(
        store,
        tiles,
        loaded.config.levels,
        reader.profile(),
        loaded.taxonomy,
        summary=timings,
        extra={
            **timings,
            "predict_s": round(predict_s, 2),
            "settings": asdict(settings),
            "input_contract": loaded.contract.to_dict() if loaded.contract else None,
            "input_drift": drift,
            "actors_peak_rss_mb": {str(pid): round(rss, 1) for pid, rss in sorted(actors.items())},
        },
    )
    manifest["total_s"] = round(time.perf_counter() - started, 2)
    return manifest


def input_identity(inputs: MapInputs, modalities: tuple[str, ...], months: int, output: Path) -> dict:
    """The inputs' content in the resume record, their digests cached in the output folder by size and
    modification time (a rerun hashes only what changed on disk; a touched or rewritten file with the same
    content still resumes)."""
    path = Path(output) / DIGESTS
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    identity = inputs.identity(modalities, months, digests=cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(cache, indent=1))
    return identity


def check_actor_pool(settings: MapSettings, autoscaling: bool | None = None) -> MapSettings:
    """The settings with ``cpus_per_actor`` resolved from the cluster (its CPUs shared among the actors, at
    most the largest node's: the driver's own cores say nothing on a cluster), after checking that the pool
    can be placed: refused on a fixed cluster, waited for on an autoscaling one (``autoscaling``: None reads
    the autoscaler's report)."""
    import ray

    from pipelines.runtime.cluster import check_placement

    if settings.cpus_per_actor is None:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        largest = max((node.get("CPU", 0) for node in nodes), default=1)
        share = sum(node.get("CPU", 0) for node in nodes) // settings.actors
        settings = replace(settings, cpus_per_actor=float(max(1, min(largest, share))))
    per_actor = {"CPU": settings.cpus_per_actor, "GPU": 1 if settings.use_gpu else 0}
    hint = "lower --actors or --cpus-per-actor, or drop --use-gpu"
    check_placement(per_actor, settings.actors, "actor", "actor pool", hint, autoscaling=autoscaling)
    return settings
