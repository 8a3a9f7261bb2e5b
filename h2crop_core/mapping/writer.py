"""Finished tiles on disk, the resume record, and the per-level Cloud-Optimized GeoTIFFs.

An output folder holds ``mapping.json`` (what is being mapped: checkpoint, inputs, grid, decoding; written
first), ``tiles/<index>.npz`` (each tile's owned core, class ids and confidence, written atomically, so a
file that exists is complete) and, once every tile is done, ``level<k>.tif`` and ``confidence_level<k>.tif``
per predicted level, ``summary.json``, ``quicklook.png`` and ``map.json``, written last: a folder without
``map.json`` is never a finished map. A rerun with the same record skips finished tiles; a
different record is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from h2crop_core.errors import H2CropError
from h2crop_core.files import PARTIAL, write_atomic, write_text_atomic
from h2crop_core.mapping.area import row_areas_m2
from h2crop_core.mapping.quicklook import write_quicklook
from h2crop_core.mapping.results import CONFIDENCE_NODATA, TileResult, ids_dtype, ids_nodata
from h2crop_core.mapping.tiling import Tile
from h2crop_core.records import keep_record
from h2crop_core.storage import Remote
from h2crop_core.taxonomy import Taxonomy

RECORD = "mapping.json"
MAP_MANIFEST = "map.json"
SUMMARY = "summary.json"


#: what a mapping run writes beside ``tiles/`` (``map.json`` last)
OUTPUT_PATTERNS = (RECORD, MAP_MANIFEST, SUMMARY, "quicklook.png", "level[0-9].tif", "confidence_level[0-9].tif")


class MappingRecordError(H2CropError):
    """The output folder belongs to a different mapping run."""


class TileStore:
    """The tiles of one mapping run under ``out_dir``.

    Args:
        out_dir: output folder (created).
        record: what defines the run (JSON-able); stored on first use and compared on every later one.
        mirror: an object-store prefix (``s3://bucket/maps/x``) that receives the record and every tile as it
            is written, so tiles written on any node reach the driver and survive the machine.
    """

    def __init__(self, out_dir: str | Path, record: dict, mirror: str | None = None) -> None:
        self.remote = Remote(mirror) if mirror else None
        self.folder = Path(out_dir)
        self.tiles_dir = self.folder / "tiles"
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        record_path = self.folder / RECORD
        for leftover in self.tiles_dir.glob(f".*{PARTIAL}"):  # from an interrupted write; never a result
            leftover.unlink(missing_ok=True)
        record = keep_record(
            record_path, record, self.tiles_dir, run="a mapping run", pieces="tiles", error=MappingRecordError
        )
        if self.remote is not None and not self.remote.exists(RECORD):
            self.remote.upload(record_path, RECORD)
        self.record = record

    def path(self, index: int) -> Path:
        return self.tiles_dir / f"{index:06d}.npz"

    def finished(self) -> set[int]:
        """Indexes of the tiles already written."""
        return {int(p.stem) for p in self.tiles_dir.glob("*.npz") if p.stem.isdigit()}

    def write(self, tile: Tile, result: TileResult) -> Path:
        """Store a tile's core (ids and confidence, (levels, h, w) each); the file appears only once complete."""
        check_core(tile, result)
        path = self.path(tile.index)
        write_atomic(path, lambda file: np.savez(file, ids=result.ids, confidence=result.confidence))
        if self.remote is not None:
            self.remote.upload(path, f"tiles/{path.name}")
        return path

    def read(self, index: int) -> TileResult:
        with np.load(self.path(index)) as stored:
            return TileResult(stored["ids"], stored["confidence"])

    @property
    def complete(self) -> bool:
        """True once :func:`write_level_cogs` finished for this run."""
        return (self.folder / MAP_MANIFEST).is_file()


def check_core(tile: Tile, result: TileResult) -> None:
    """A tile result holds exactly the tile's core."""
    row0, row1, col0, col1 = tile.core
    for name, array in result._asdict().items():
        if array.shape[1:] != (row1 - row0, col1 - col0):
            raise ValueError(
                f"tile {tile.index}: core {name} is {array.shape[1:]}, expected {(row1 - row0, col1 - col0)}"
            )


class RemoteTileWriter:
    """Writes tiles straight to an object-store prefix, each through a temporary file gone after its upload:
    a mapping actor on any node of a cluster keeps nothing on its node, so a rerun (``--overwrite`` too) never
    meets an earlier run's tiles there. The driver assembles the map from the bucket.

    Args:
        mirror: the map's object-store prefix (``s3://bucket/maps/x``).
        record: the run's resume record; the bucket must hold the same (the driver put it there).
    """

    def __init__(self, mirror: str, record: dict) -> None:
        self.remote = Remote(mirror)
        stored = json.loads(self.remote.read_text(RECORD)) if self.remote.exists(RECORD) else None
        if stored != json.loads(json.dumps(record)):
            raise MappingRecordError(f"{mirror}/{RECORD}: not this mapping run's record; rerun h2crop map")

    def write(self, tile: Tile, result: TileResult) -> str:
        check_core(tile, result)
        name = f"tiles/{tile.index:06d}.npz"
        with tempfile.TemporaryDirectory(prefix="h2crop-tile-") as folder:
            path = Path(folder) / "tile.npz"
            np.savez(path, ids=result.ids, confidence=result.confidence)
            self.remote.upload(path, name)
        return name


def clear_outputs(folder: str | Path) -> list[Path]:
    """Delete what a mapping run wrote into ``folder`` (tiles, record, maps, summary, quicklook, partial
    files), nothing else: a user's other files there stay. Returns what was deleted."""
    folder = Path(folder)
    patterns = OUTPUT_PATTERNS + (f".*{PARTIAL}",)
    deleted = [path for pattern in patterns for path in folder.glob(pattern) if path.is_file()]
    for path in deleted:
        path.unlink()
    if (folder / "tiles").is_dir():
        shutil.rmtree(folder / "tiles")
        deleted.append(folder / "tiles")
    return deleted


def _staging_profiles(grid: dict, levels: Sequence[int], taxonomy: Taxonomy) -> dict[str, dict]:
    """GeoTIFF profile of each output raster, by file stem: ``level<k>`` class ids (uint8, or uint16 for a
    level of more than 255 classes) and ``confidence_level<k>`` (uint8, 0 = nodata)."""
    common = {
        "driver": "GTiff",
        "height": grid["height"],
        "width": grid["width"],
        "count": 1,
        "crs": grid["crs"],
        "transform": grid["transform"],
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "bigtiff": "IF_SAFER",
    }
    profiles = {}
    for level in levels:
        dtype = ids_dtype([taxonomy.num_classes[level - 1]])
        profiles[f"level{level}"] = dict(common, dtype=dtype.name, nodata=ids_nodata(dtype))
        profiles[f"confidence_level{level}"] = dict(common, dtype="uint8", nodata=CONFIDENCE_NODATA)
    return profiles


def _describe(dst: rasterio.io.DatasetWriter, stem: str, level: int, taxonomy: Taxonomy) -> None:
    if stem.startswith("confidence"):
        dst.set_band_description(1, stem)
        dst.update_tags(
            level=level, meaning="probability of the mapped class x 255 (1-255); 0 = no data", scale=1 / 255
        )
        return
    dst.write_colormap(1, {i: (*map(int, rgb), 255) for i, rgb in enumerate(taxonomy.colours(level))})
    dst.set_band_description(1, stem)
    dst.update_tags(1, **{f"class_{i}": n for i, n in enumerate(taxonomy.class_names(level))})
    dst.update_tags(level=level, nodata_meaning="no S2 data (or no EnMAP data, for a model that reads EnMAP)")


def _mosaic(
    store: TileStore,
    tiles: Sequence[Tile],
    levels: Sequence[int],
    grid: dict,
    taxonomy: Taxonomy,
    profiles: dict[str, dict],
    staging: dict[str, Path],
) -> np.ndarray:
    """Write every tile's core into the staging GeoTIFFs; return the mapped area (m²) per level and class id."""
    row_area = row_areas_m2(grid["crs"], grid["transform"], grid["height"])
    area = np.zeros((len(levels), max(taxonomy.num_classes[level - 1] for level in levels) + 1))
    with contextlib.ExitStack() as stack:
        datasets = {
            stem: stack.enter_context(rasterio.open(staging[stem], "w", **profile))
            for stem, profile in profiles.items()
        }
        for stem, dst in datasets.items():
            _describe(dst, stem, int(stem.rsplit("level", 1)[1]), taxonomy)
        for tile in tiles:  # each tile file is read once, for all levels
            row0, row1, col0, col1 = tile.core
            window = Window(col0, row0, col1 - col0, row1 - row0)
            result = store.read(tile.index)
            weights = np.broadcast_to(row_area[row0:row1, None], result.ids.shape[1:]).ravel()
            for band, level in enumerate(levels):
                datasets[f"level{level}"].write(result.ids[band], 1, window=window)
                datasets[f"confidence_level{level}"].write(result.confidence[band], 1, window=window)
                ids = np.minimum(result.ids[band].ravel().astype(np.int64), area.shape[1] - 1)  # nodata -> the last bin
                area[band] += np.bincount(ids, weights=weights, minlength=area.shape[1])
    return area[:, :-1]


def write_level_cogs(
    store: TileStore,
    tiles: Sequence[Tile],
    levels: Sequence[int],
    grid: dict,
    taxonomy: Taxonomy,
    *,
    summary: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Mosaic the finished tiles into Cloud-Optimized GeoTIFFs, then write ``summary.json``, the quicklook and
    ``map.json`` (last).

    Per predicted level k: ``level<k>.tif``, class ids (uint8, nodata 255; uint16, nodata 65535, for a level
    of more than 255 classes) with the taxonomy's colours as its colour table, the class names in its tags,
    and overviews by the most frequent class; ``confidence_level<k>.tif``, uint8 probability × 255 of the
    mapped class (nodata 0), overviews by average.

    Args:
        store: the run's tiles (all of ``tiles`` must be finished).
        tiles: the grid's tiles.
        levels: the levels the model predicts (1-based), in the order of the stored bands.
        grid: ``crs``, ``transform``, ``height``, ``width`` of the map's (S2) grid.
        taxonomy: names and colours of the classes.
        summary: more entries for ``summary.json`` (timings: ``seconds``, to give ``km2_per_s``).
        extra: more entries for ``map.json``.

    Returns:
        The ``map.json`` content.
    """
    missing = sorted({t.index for t in tiles} - store.finished())
    if missing:
        raise ValueError(f"{store.tiles_dir}: {len(missing)} tiles are not finished yet (first: {missing[:5]})")
    folder = store.folder
    (folder / MAP_MANIFEST).unlink(missing_ok=True)
    started = time.perf_counter()
    profiles = _staging_profiles(grid, levels, taxonomy)
    stems = list(profiles)
    staging = {stem: folder / f".{stem}.staging{PARTIAL}" for stem in stems}
    try:
        area_m2 = _mosaic(store, tiles, levels, grid, taxonomy, profiles, staging)
        files = {stem: _to_cog(staging[stem], folder, stem) for stem in stems}
    finally:
        for path in staging.values():
            path.unlink(missing_ok=True)
    stats = map_summary(
        area_m2,
        levels,
        taxonomy,
        grid,
        len(tiles),
        {**(summary or {}), "write_s": round(time.perf_counter() - started, 2)},
    )
    write_text_atomic(folder / SUMMARY, json.dumps(stats, indent=1))
    files["summary"] = SUMMARY
    files["quicklook"] = write_quicklook(folder, files, levels, taxonomy, stats["class_area_ha"]).name
    manifest = {
        "files": files,
        "levels": list(levels),
        "classes": {f"level{level}": list(taxonomy.class_names(level)) for level in levels},
        "taxonomy_paths": taxonomy.paths.tolist(),
        "crs": str(grid["crs"]),
        "transform": list(grid["transform"])[:6],
        "height": grid["height"],
        "width": grid["width"],
        "tiles": len(tiles),
        "record": store.record,
        **(extra or {}),
    }
    write_text_atomic(folder / MAP_MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _to_cog(staging: Path, folder: Path, stem: str) -> str:
    """Copy a staged mosaic to ``<stem>.tif`` as a COG (through a partial name); overviews by the most frequent
    class, or by average for confidence."""
    partial = folder / f".{stem}.tif{PARTIAL}"
    overviews = "average" if stem.startswith("confidence") else "mode"
    rasterio.shutil.copy(
        staging,
        partial,
        driver="COG",
        compress="deflate",
        overview_resampling=overviews,
        blocksize=256,
        bigtiff="IF_SAFER",
    )
    os.replace(partial, folder / f"{stem}.tif")
    return f"{stem}.tif"


def map_summary(
    area_m2: np.ndarray, levels: Sequence[int], taxonomy: Taxonomy, grid: dict, tiles: int, timings: dict
) -> dict:
    """``summary.json``: the grid's and the mapped area (km²), tiles, this run's seconds (``seconds``
    predicting, ``write_s`` writing) and km²/s over both, and per level each mapped class's area in hectares
    (largest first; classes absent from the map left out)."""
    grid_km2 = float(row_areas_m2(grid["crs"], grid["transform"], grid["height"]).sum() * grid["width"] / 1e6)
    mapped_km2 = float(area_m2[-1].sum() / 1e6)  # every level has the same nodata pixels
    seconds = timings.get("seconds", 0) + timings.get("write_s", 0)
    classes = {}
    for band, level in enumerate(levels):
        names = taxonomy.class_names(level)
        order = np.argsort(-area_m2[band][: len(names)], kind="stable")
        classes[f"level{level}"] = {
            names[i]: round(float(area_m2[band][i]) / 1e4, 4) for i in order if area_m2[band][i] > 0
        }
    return {
        "grid_km2": round(grid_km2, 6),
        "mapped_km2": round(mapped_km2, 6),
        "tiles": tiles,
        **timings,
        "km2_per_s": round(grid_km2 / seconds, 4) if seconds else None,
        "class_area_ha": classes,
    }
