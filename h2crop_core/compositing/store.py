"""Finished blocks on disk, the resume record, and the monthly composites.

An output folder holds ``compositing.json`` (what is being composited: the scenes, the grid, the settings;
written first), ``blocks/<index>.npz`` (each block's months, written atomically: a file that exists is
complete) and, once every block is done, one ``S2_<year>-<month>.tif`` per month (10 bands int16 in the
model's order, named in the band descriptions, nodata -32768, tagged with the reflectance convention), the
clear-observation counts ``clear/clear_<year>-<month>.tif`` (uint8) and ``composite.json``, written last: a
folder without it is never a finished composite. The monthly files are what ``h2crop map --s2 DIR`` reads;
the counts sit in a subfolder so that map never takes them for a month. The pipeline deletes ``blocks/`` once
``composite.json`` is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import rasterio

from h2crop_core.compositing.grid import Block, TargetGrid
from h2crop_core.errors import H2CropError
from h2crop_core.files import PARTIAL, write_atomic, write_text_atomic
from h2crop_core.products.harmonise import NODATA, S2_CONVENTION
from h2crop_core.products.sentinel2 import MODEL_BANDS
from h2crop_core.records import keep_record

RECORD = "compositing.json"
MANIFEST = "composite.json"
COUNTS = "clear"
BLOCKS = "blocks"
TILED = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


class CompositeRecordError(H2CropError):
    """The output folder belongs to a different compositing run."""


def month_file(year: int, month: int) -> str:
    return f"S2_{year}-{month:02d}.tif"


def count_file(year: int, month: int) -> str:
    return f"{COUNTS}/clear_{year}-{month:02d}.tif"


class BlockStore:
    """The blocks of one compositing run under ``folder`` (created); ``record`` is stored on first use and
    compared on every later one."""

    def __init__(self, folder: str | Path, record: dict) -> None:
        self.folder = Path(folder)
        self.blocks_dir = self.folder / BLOCKS
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.blocks_dir.glob(f".*{PARTIAL}"):  # an interrupted write; never a result
            leftover.unlink(missing_ok=True)
        self.record = keep_record(
            self.folder / RECORD,
            record,
            self.blocks_dir,
            run="a compositing run",
            pieces="blocks",
            error=CompositeRecordError,
        )

    def path(self, index: int) -> Path:
        return self.blocks_dir / f"{index:06d}.npz"

    def finished(self) -> set[int]:
        return {int(p.stem) for p in self.blocks_dir.glob("*.npz") if p.stem.isdigit()}

    def write(self, index: int, data: np.ndarray, count: np.ndarray, scenes: list[list[str]]) -> Path:
        """Store a block's months; the file appears only once complete."""
        names = np.array(json.dumps(scenes))
        return write_atomic(self.path(index), lambda file: np.savez(file, data=data, count=count, scenes=names))

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        with np.load(self.path(index)) as stored:
            return stored["data"], stored["count"], json.loads(str(stored["scenes"]))

    @property
    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()


def clear_outputs(folder: str | Path) -> list[Path]:
    """Delete what a compositing run wrote into ``folder`` (blocks, record, composites, counts, manifest,
    partial files); a user's other files stay. Returns what was deleted."""
    folder = Path(folder)
    patterns = (RECORD, MANIFEST, "S2_[0-9][0-9][0-9][0-9]-[0-9][0-9].tif", f".*{PARTIAL}")
    deleted = [path for pattern in patterns for path in folder.glob(pattern) if path.is_file()]
    for path in deleted:
        path.unlink()
    for sub in (BLOCKS, COUNTS):
        if (folder / sub).is_dir():
            shutil.rmtree(folder / sub)
            deleted.append(folder / sub)
    return deleted


def _profiles(grid: TargetGrid) -> tuple[dict, dict]:
    common = dict(TILED, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height)
    composite = dict(common, count=len(MODEL_BANDS), dtype="int16", nodata=NODATA, predictor=2)
    count = dict(common, count=1, dtype="uint8")
    return composite, count


def write_composites(
    store: BlockStore, grid: TargetGrid, blocks: list[Block], year: int, months: tuple[int, ...]
) -> dict:
    """Assemble the finished blocks into the monthly composites and counts (each written to a temporary name
    and renamed when complete; blocks are read once, in index order, so the files are the same byte for byte
    whichever order the blocks were made in). Returns per month: the share of the grid with at least one
    clear observation and the mean count."""
    composite_profile, count_profile = _profiles(grid)
    (store.folder / COUNTS).mkdir(exist_ok=True)
    names = {m: (store.folder / month_file(year, m), store.folder / count_file(year, m)) for m in months}
    staging = {m: tuple(p.with_name(f".{p.name}{PARTIAL}") for p in pair) for m, pair in names.items()}
    handles: dict[int, tuple] = {}
    totals = {m: [0, 0] for m in months}  # pixels observed, observations
    try:
        for month, (data_path, count_path) in staging.items():
            data_out = rasterio.open(data_path, "w", **composite_profile)
            count_out = rasterio.open(count_path, "w", **count_profile)
            handles[month] = (data_out, count_out)
            data_out.descriptions = MODEL_BANDS
            data_out.update_tags(
                h2crop_s2_convention=S2_CONVENTION, year=year, month=month, bands=",".join(MODEL_BANDS)
            )
            count_out.descriptions = ("clear observations",)
        for block in blocks:
            data, count, _ = store.read(block.index)
            for i, month in enumerate(months):
                handles[month][0].write(data[i], window=block.window)
                handles[month][1].write(count[i], 1, window=block.window)
                totals[month][0] += int((count[i] > 0).sum())
                totals[month][1] += int(count[i].sum())
    finally:
        for pair in handles.values():
            for handle in pair:
                handle.close()
    for month in months:
        for partial, final in zip(staging[month], names[month]):
            partial.replace(final)
    pixels = grid.width * grid.height
    return {
        m: {"clear_share": round(totals[m][0] / pixels, 4), "mean_count": round(totals[m][1] / pixels, 3)}
        for m in months
    }


def write_manifest(folder: Path, manifest: dict) -> Path:
    """``composite.json``, last: its presence marks a finished composite."""
    return write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
