"""Parcels in, parcels out: vector files streamed as Arrow batches and GeoParquet written batch by batch.

Reading goes through GDAL (``pyogrio.open_arrow``: GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...) or,
for ``.parquet``, through pyarrow with the file's GeoParquet metadata; either way a batch holds the
attributes and the geometry as WKB, and memory holds one batch. Writing follows the GeoParquet 1.1 spec
(WKB geometry column, ``geo`` metadata with the CRS as PROJJSON), readable by ``geopandas.read_parquet``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyproj import CRS

from h2crop_core.errors import H2CropError

GEOPARQUET_VERSION = "1.1.0"
DEFAULT_ID = "fid"


class VectorError(H2CropError):
    """A parcels file that cannot be read as asked; the message names the file."""


@dataclass
class ParcelBatch:
    """Up to ``batch_size`` parcels: their ids, their geometry as WKB (``None`` where absent) and its CRS."""

    ids: pa.Array
    wkb: list[bytes | None]
    crs: CRS


def _geoparquet_batches(path: Path, id_column: str | None, batch_size: int) -> Iterator[ParcelBatch]:
    file = pq.ParquetFile(path)
    meta = json.loads((file.schema_arrow.metadata or {}).get(b"geo", b"{}") or b"{}")
    if not meta:
        raise VectorError(
            f"{path}: a Parquet file without GeoParquet ('geo') metadata; write it with geopandas' to_parquet"
        )
    geometry = meta["primary_column"]
    column = meta["columns"][geometry]
    if column.get("encoding", "WKB").upper() != "WKB":
        raise VectorError(
            f"{path}: geometry encoded as {column['encoding']!r}; h2crop reads WKB GeoParquet (geopandas' default)"
        )
    crs = (
        CRS.from_user_input(column["crs"]) if column.get("crs") else CRS.from_epsg(4326)
    )  # the spec's default: OGC:CRS84
    _check_id(path, id_column, file.schema_arrow.names)
    first = 0
    for batch in file.iter_batches(batch_size=batch_size, columns=[c for c in (id_column, geometry) if c]):
        ids = batch.column(id_column) if id_column else pa.array(range(first, first + batch.num_rows), pa.int64())
        first += batch.num_rows
        yield ParcelBatch(ids, batch.column(geometry).to_pylist(), crs)


def _gdal_batches(path: Path, id_column: str | None, batch_size: int) -> Iterator[ParcelBatch]:
    import pyogrio

    try:
        info = pyogrio.read_info(path)
    except Exception as error:  # noqa: BLE001 - GDAL's own message says what is wrong with the file
        raise VectorError(f"{path}: not a vector file GDAL can read ({error})") from None
    if info.get("crs") is None:
        raise VectorError(f"{path}: the parcels have no CRS; they must be georeferenced to be placed on the map")
    _check_id(path, id_column, list(info["fields"]))
    columns = [id_column] if id_column else []
    with pyogrio.open_arrow(
        path, columns=columns, return_fids=not id_column, batch_size=batch_size, use_pyarrow=True
    ) as (meta, reader):
        crs = CRS.from_user_input(meta["crs"])
        geometry = meta["geometry_name"] or "wkb_geometry"
        for batch in reader:
            ids = batch.column(id_column or meta.get("fid_column") or 0)  # return_fids puts the FID first
            yield ParcelBatch(ids, batch.column(geometry).to_pylist(), crs)


def _check_id(path: Path, id_column: str | None, names: list[str]) -> None:
    if id_column and id_column not in names:
        raise VectorError(f"{path}: no column {id_column!r} (--id-column); it has {names}")


def read_parcels(path: str | Path, id_column: str | None = None, batch_size: int = 20_000) -> Iterator[ParcelBatch]:
    """The parcels of ``path`` in batches (:class:`ParcelBatch`).

    Args:
        id_column: the column identifying a parcel; default: the feature id (GDAL's FID; the row number for
            GeoParquet).

    Raises:
        VectorError: the file is missing, unreadable, has no CRS, or lacks ``id_column``.
    """
    path = Path(path)
    if not path.exists():
        raise VectorError(f"{path}: no such file (the parcels)")
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        return _geoparquet_batches(path, id_column, batch_size)
    return _gdal_batches(path, id_column, batch_size)


class GeoParquetWriter:
    """Write record batches (attributes + a WKB ``geometry`` column) as one GeoParquet file.

    Args:
        path: where the file is written (the caller renames it into place once complete).
        schema: the attributes' Arrow schema; ``geometry`` (binary) is appended.
        crs: the geometries' CRS, recorded as PROJJSON.
    """

    def __init__(self, path: Path, schema: pa.Schema, crs: CRS) -> None:
        geo = {
            "version": GEOPARQUET_VERSION,
            "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": [], "crs": crs.to_json_dict()}},
        }
        self.schema = schema.append(pa.field("geometry", pa.binary())).with_metadata({"geo": json.dumps(geo)})
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, columns: dict[str, pa.Array | list], wkb: list[bytes | None]) -> None:
        arrays = [pa.array(columns[name], type=self.schema.field(name).type) for name in self.schema.names[:-1]]
        self.writer.write_batch(pa.record_batch([*arrays, pa.array(wkb, pa.binary())], schema=self.schema))

    def close(self) -> None:
        self.writer.close()
