"""Finished tiles on disk, the resume record, and the per-level Cloud-Optimized GeoTIFFs.

An output folder holds ``mapping.json`` (what is being mapped: checkpoint, region, grid, decoding; written
first), ``tiles/<index>.npy`` (each tile's owned core, written atomically, so a file that exists is
complete) and, once every tile is done, ``level<k>.tif`` per predicted level and ``map.json``, written last:
a folder without ``map.json`` is never a finished map. A rerun with the same record skips finished tiles; a
different record is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.enums
import rasterio.shutil
from rasterio.windows import Window

from h2crop_core.errors import H2CropError
from h2crop_core.files import PARTIAL, write_atomic, write_text_atomic
from h2crop_core.mapping.tiling import Tile
from h2crop_core.taxonomy import UNLABELLED, Taxonomy

RECORD = "mapping.json"
MAP_MANIFEST = "map.json"


class MappingRecordError(H2CropError):
    """The output folder belongs to a different mapping run."""


class TileStore:
    """The tiles of one mapping run under ``out_dir``.

    Args:
        out_dir: output folder (created).
        record: what defines the run (JSON-able); stored on first use and compared on every later one.
    """

    def __init__(self, out_dir: str | Path, record: dict) -> None:
        self.folder = Path(out_dir)
        self.tiles_dir = self.folder / "tiles"
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        record_path = self.folder / RECORD
        record = json.loads(json.dumps(record))  # the JSON form, so tuples and lists compare equal
        for leftover in self.tiles_dir.glob(f".*{PARTIAL}"):  # from an interrupted write; never a result
            leftover.unlink(missing_ok=True)
        if record_path.is_file():
            try:
                stored = json.loads(record_path.read_text())
            except json.JSONDecodeError:
                raise MappingRecordError(f"{record_path}: unreadable; delete the output folder to start over") from None
            differing = sorted(k for k in set(stored) | set(record) if stored.get(k) != record.get(k))
            if differing:
                raise MappingRecordError(
                    f"{record_path}: this folder holds a mapping run with different {differing} "
                    f"(stored {[stored.get(k) for k in differing]}, now {[record.get(k) for k in differing]}); "
                    "choose another output folder or delete it to start over"
                )
        elif self.finished():
            raise MappingRecordError(
                f"{self.tiles_dir}: holds tiles but {record_path} is missing, so what they were mapped with is unknown; "
                "choose another output folder or delete it to start over"
            )
        else:
            write_text_atomic(record_path, json.dumps(record, indent=1))
        self.record = record

    def path(self, index: int) -> Path:
        return self.tiles_dir / f"{index:06d}.npy"

    def finished(self) -> set[int]:
        """Indexes of the tiles already written."""
        return {int(p.stem) for p in self.tiles_dir.glob("*.npy") if p.stem.isdigit()}

    def write(self, tile: Tile, core: np.ndarray) -> Path:
        """Store a tile's (levels, h, w) core; the file appears only once complete."""
        row0, row1, col0, col1 = tile.core
        if core.shape[1:] != (row1 - row0, col1 - col0):
            raise ValueError(f"tile {tile.index}: core is {core.shape[1:]}, expected {(row1 - row0, col1 - col0)}")
        path = self.path(tile.index)
        write_atomic(path, lambda file: np.save(file, core))
        return path

    def read(self, index: int) -> np.ndarray:
        return np.load(self.path(index))

    @property
    def complete(self) -> bool:
        """True once :func:`write_level_cogs` finished for this run."""
        return (self.folder / MAP_MANIFEST).is_file()


def write_level_cogs(
    store: TileStore,
    tiles: Sequence[Tile],
    levels: Sequence[int],
    grid: dict,
    taxonomy: Taxonomy,
    *,
    extra: dict | None = None,
) -> dict:
    """Mosaic the finished tiles into one Cloud-Optimized GeoTIFF per level, then write ``map.json``.

    Each file is single-band uint8 class ids (nodata 255) on the region's S2 grid, with the taxonomy's
    colours as its colour table, the class names in its tags, and overviews by the most frequent class.

    Args:
        store: the run's tiles (all of ``tiles`` must be finished).
        tiles: the grid's tiles.
        levels: the levels the model predicts (1-based), in the order of the stored bands.
        grid: ``crs``, ``transform``, ``height``, ``width`` of the region's S2 grid.
        taxonomy: names and colours of the classes.
        extra: more entries for ``map.json`` (timings, counts).

    Returns:
        The ``map.json`` content.
    """
    missing = sorted({t.index for t in tiles} - store.finished())
    if missing:
        raise ValueError(f"{store.tiles_dir}: {len(missing)} tiles are not finished yet (first: {missing[:5]})")
    folder = store.folder
    (folder / MAP_MANIFEST).unlink(missing_ok=True)
    profile = {
        "driver": "GTiff", "height": grid["height"], "width": grid["width"], "count": 1, "dtype": "uint8",
        "crs": grid["crs"], "transform": grid["transform"], "nodata": UNLABELLED, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "bigtiff": "IF_SAFER",
    }
    names = {level: f"level{level}.tif" for level in levels}
    staging = {level: folder / f".{name}.staging{PARTIAL}" for level, name in names.items()}
    with contextlib.ExitStack() as stack:
        datasets = [stack.enter_context(rasterio.open(staging[level], "w", **profile)) for level in levels]
        for dst, level in zip(datasets, levels):
            dst.write_colormap(1, {i: (*map(int, rgb), 255) for i, rgb in enumerate(taxonomy.colours(level))})
            dst.set_band_description(1, f"level{level}")
            dst.update_tags(1, **{f"class_{i}": n for i, n in enumerate(taxonomy.class_names(level))})
            dst.update_tags(level=level, nodata_meaning="no S2 data")
        for tile in tiles:  # each tile file is read once, for all levels
            row0, row1, col0, col1 = tile.core
            core = store.read(tile.index)
            for band, dst in enumerate(datasets):
                dst.write(core[band], 1, window=Window(col0, row0, col1 - col0, row1 - row0))
    files = {}
    for level, name in names.items():
        partial = folder / f".{name}{PARTIAL}"
        rasterio.shutil.copy(staging[level], partial, driver="COG", compress="deflate", overview_resampling="mode", blocksize=256, bigtiff="IF_SAFER")
        os.replace(partial, folder / name)
        staging[level].unlink()
        files[f"level{level}"] = name
    files["quicklook"] = write_quicklook(folder, levels, taxonomy).name
    manifest = {
        "files": files,
        "levels": list(levels),
        "classes": {f"level{level}": list(taxonomy.class_names(level)) for level in levels},
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


def write_quicklook(folder: Path, levels: Sequence[int], taxonomy: Taxonomy, max_side: int = 1024) -> Path:
    """``quicklook.png``: the level maps side by side in the taxonomy's colours (read from the COGs'
    overviews, at most ``max_side`` pixels a side), no-data in white."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 4.4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        with rasterio.open(folder / f"level{level}.tif") as src:
            scale = max(1, -(-max(src.height, src.width) // max_side))
            ids = src.read(1, out_shape=(src.height // scale, src.width // scale), resampling=rasterio.enums.Resampling.mode)
        palette = np.vstack([taxonomy.colours(level), np.zeros((256 - taxonomy.num_classes[level - 1], 3), np.uint8)])
        palette[UNLABELLED] = 255
        ax.imshow(palette[ids], interpolation="nearest")
        ax.set_title(f"level {level} ({taxonomy.num_classes[level - 1] - 1} classes)")
        ax.set_axis_off()
    fig.tight_layout()
    path = folder / "quicklook.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
