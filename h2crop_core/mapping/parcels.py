"""Per-parcel crops from a finished map: majority class, its share and confidence, to GeoParquet.

    h2crop parcels --map maps/x --parcels lpis_2023.gpkg --output maps/x/parcels.parquet --id-column ID_PARCEL

A parcel's pixels are those whose centre lies inside it (``rasterio.features.rasterize``); its class is the
most frequent finest-level class among its mapped (not nodata) pixels, its share the fraction of them that
class holds, its confidence their mean confidence. Coarser levels come from that class's taxonomy path, so
the four levels always agree. Parcels are expected not to overlap (as in a parcel register): a pixel under
two parcels counts for the later one in the file. Parcels are read, counted and written a batch at a time, and each batch reads
only the map blocks under it: memory does not grow with the number of parcels or the map's size.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from tqdm.auto import tqdm

from h2crop_core.files import PARTIAL
from h2crop_core.mapping.vectors import DEFAULT_ID, GeoParquetWriter, ParcelBatch, read_parcels
from h2crop_core.mapping.writer import MAP_MANIFEST, MappingRecordError

BLOCK = 1024  # map pixels per block side read at a time


def read_map_manifest(map_dir: Path) -> dict:
    path = map_dir / MAP_MANIFEST
    if not path.is_file():
        raise MappingRecordError(
            f"{path}: missing; {map_dir} is not a finished h2crop map (run h2crop map, or let it finish)"
        )
    return json.loads(path.read_text())


class ParcelCounter:
    """Class-pixel counts of parcels on one level's map and its confidence raster."""

    def __init__(self, map_dir: Path, manifest: dict, level: int) -> None:
        self.ids = rasterio.open(map_dir / manifest["files"][f"level{level}"])
        self.confidence = rasterio.open(map_dir / manifest["files"][f"confidence_level{level}"])
        self.classes = len(manifest["classes"][f"level{level}"])

    def count(self, geometries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parcels, classes) pixel counts and confidence sums of ``geometries`` (in the map's CRS)."""
        counts = np.zeros((len(geometries), self.classes), np.int64)
        sums = np.zeros((len(geometries), self.classes), np.float64)
        for (row, col), members in self._blocks(geometries).items():
            window = Window(col, row, min(BLOCK, self.ids.width - col), min(BLOCK, self.ids.height - row))
            ids = self.ids.read(1, window=window)
            confidence = self.confidence.read(1, window=window)
            shapes = ((geometries[m], k + 1) for k, m in enumerate(members))
            owner = rasterize(
                shapes,
                out_shape=ids.shape,
                transform=window_transform(window, self.ids.transform),
                fill=0,
                dtype="int32",
            )
            inside = (owner > 0) & (ids != self.ids.nodata)
            local = (owner[inside].astype(np.int64) - 1) * self.classes + ids[inside]
            size = len(members) * self.classes
            counts[members] += np.bincount(local, minlength=size).reshape(len(members), self.classes)
            sums[members] += np.bincount(local, weights=confidence[inside], minlength=size).reshape(
                len(members), self.classes
            )
        return counts, sums

    def _blocks(self, geometries: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """The parcels under each map block, by the block's upper-left pixel."""
        blocks: dict[tuple[int, int], list[int]] = defaultdict(list)
        inverse = ~self.ids.transform
        for index, bounds in enumerate(shapely.bounds(geometries)):
            if np.isnan(bounds).any():
                continue  # no geometry
            cols, rows = zip(*(inverse @ (x, y) for x, y in ((bounds[0], bounds[1]), (bounds[2], bounds[3]))))
            row0, row1 = max(0, int(np.floor(min(rows)))), min(self.ids.height - 1, int(np.floor(max(rows))))
            col0, col1 = max(0, int(np.floor(min(cols)))), min(self.ids.width - 1, int(np.floor(max(cols))))
            for row in range(row0 // BLOCK * BLOCK, row1 + 1, BLOCK):
                for col in range(col0 // BLOCK * BLOCK, col1 + 1, BLOCK):
                    blocks[row, col].append(index)
        return {key: np.asarray(members) for key, members in blocks.items()}

    def close(self) -> None:
        self.ids.close()
        self.confidence.close()


def _ancestors(paths: np.ndarray, level: int) -> np.ndarray:
    """(classes at ``level``, 4) ids of each class's path from level 1 down (-1 below ``level``)."""
    table = np.full((int(paths[:, level - 1].max()) + 1, 4), -1, np.int64)
    for row in paths:
        table[row[level - 1], :level] = row[:level]
    return table


def _columns(counts: np.ndarray, sums: np.ndarray, ancestors: np.ndarray, classes: dict, level: int) -> dict[str, list]:
    """The output columns of one batch of parcels."""
    n_pixels = counts.sum(axis=1)
    majority = counts.argmax(axis=1)
    hits = counts[np.arange(len(counts)), majority]
    mapped = n_pixels > 0
    columns: dict[str, list] = {}
    for k in range(1, 5):
        ids = ancestors[majority, k - 1] if k <= level else np.full(len(counts), -1)
        names = classes.get(f"level{k}")
        columns[f"level{k}_id"] = [int(i) if ok and i >= 0 else None for i, ok in zip(ids, mapped)]
        columns[f"level{k}_name"] = [names[i] if ok and i >= 0 else None for i, ok in zip(ids, mapped)]
    with np.errstate(invalid="ignore", divide="ignore"):
        share, confidence = hits / n_pixels, sums[np.arange(len(sums)), majority] / hits / 255
    columns[f"level{level}_share"] = [float(v) if ok else None for v, ok in zip(share, mapped)]
    columns[f"level{level}_confidence"] = [float(v) if ok else None for v, ok in zip(confidence, mapped)]
    columns["n_pixels"] = n_pixels.tolist()
    return columns


def _schema(id_type: pa.DataType, id_column: str, level: int) -> pa.Schema:
    fields = [pa.field(id_column, id_type)]
    for k in range(1, 5):
        fields += [pa.field(f"level{k}_id", pa.int16()), pa.field(f"level{k}_name", pa.string())]
    fields += [
        pa.field(f"level{level}_share", pa.float64()),
        pa.field(f"level{level}_confidence", pa.float64()),
        pa.field("n_pixels", pa.int64()),
    ]
    return pa.schema(fields)


def parcel_statistics(
    map_dir: str | Path,
    parcels: str | Path,
    output: str | Path,
    *,
    id_column: str | None = None,
    batch_size: int = 20_000,
    progress: bool = True,
) -> dict:
    """Write the per-parcel statistics of the finished map ``map_dir`` for ``parcels`` to ``output``.

    Geometries and their CRS are written as read; parcels in another CRS than the map's are reprojected for
    counting only. Parcels outside the map, or over nodata only, get nulls and ``n_pixels`` 0.

    Returns:
        ``parcels`` (rows written), ``mapped`` (those with pixels), ``crs`` and ``output``.
    """
    map_dir, output = Path(map_dir), Path(output)
    manifest = read_map_manifest(map_dir)
    level = max(manifest["levels"])
    ancestors = _ancestors(np.asarray(manifest["taxonomy_paths"]), level)
    counter = ParcelCounter(map_dir, manifest, level)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}{PARTIAL}")
    writer, rows, mapped, crs = None, 0, 0, None
    try:
        with tqdm(desc="parcels", unit="parcel", disable=not progress, dynamic_ncols=True) as bar:
            for batch in read_parcels(parcels, id_column, batch_size):
                crs = batch.crs
                geometries = _to_map_crs(batch, counter.ids.crs)
                counts, sums = counter.count(geometries)
                columns = _columns(counts, sums, ancestors, manifest["classes"], level)
                if writer is None:
                    writer = GeoParquetWriter(
                        partial, _schema(batch.ids.type, id_column or DEFAULT_ID, level), batch.crs
                    )
                writer.write({id_column or DEFAULT_ID: batch.ids, **columns}, batch.wkb)
                rows, mapped = rows + len(counts), mapped + int((counts.sum(axis=1) > 0).sum())
                bar.update(len(counts))
        if writer is None:
            raise MappingRecordError(f"{parcels}: no parcels in the file")
        writer.close()
        os.replace(partial, output)
    finally:
        counter.close()
        partial.unlink(missing_ok=True)
    return {"parcels": rows, "mapped": mapped, "crs": crs.to_string() if crs else None, "output": str(output)}


def _to_map_crs(batch: ParcelBatch, map_crs) -> np.ndarray:
    geometries = shapely.from_wkb(batch.wkb)
    if batch.crs == map_crs:
        return geometries
    transformer = Transformer.from_crs(batch.crs, map_crs.to_wkt(), always_xy=True)
    return shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
