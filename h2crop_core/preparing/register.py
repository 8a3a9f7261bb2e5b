"""A parcel register read for cutting: its polygons on the S2 grid's CRS and each one's class."""

from __future__ import annotations

from pathlib import Path

from h2crop_core.preparing.crosswalk import CodeClasses, Crosswalk, CrosswalkError, check_code_column, classes_of_codes
from h2crop_core.preparing.labels import Parcels
from h2crop_core.taxonomy import Taxonomy


def read_register(
    path: str | Path, code_column: str, crs: str, taxonomy: Taxonomy, crosswalk: Crosswalk | None = None
) -> tuple[Parcels, CodeClasses, dict]:
    """Read a parcel register (any format GDAL reads: GeoPackage, Shapefile, GeoParquet, FlatGeobuf ...).

    Returns:
        The parcels on ``crs``, what each code became, and a note of the geometries dropped (none or empty)
        and repaired (invalid polygons made valid) with ``content_sha256``, a digest of what is read (each
        parcel's code and geometry, the CRS): a register written again with the same parcels (a GeoPackage
        keeps a time stamp) is the same register.

    Raises:
        CrosswalkError: the file is missing or unreadable, has no CRS, or lacks ``code_column``.
    """
    import geopandas as gpd
    import shapely

    path = Path(path)
    if not path.exists():
        raise CrosswalkError(f"{path}: parcel register not found")
    frame = _read(gpd, path, code_column)
    if frame.crs is None:
        raise CrosswalkError(
            f"{path}: the parcels have no CRS; they must be georeferenced to be burnt onto the S2 grid"
        )
    digest = _content_digest(frame, code_column)
    empty = frame.geometry.isna() | frame.geometry.is_empty
    frame = frame[~empty].to_crs(crs)
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        frame.loc[invalid, "geometry"] = shapely.make_valid(frame.geometry[invalid].values)
    areas_ha = frame.geometry.area.to_numpy() / 10_000
    classes = classes_of_codes(frame[code_column].tolist(), areas_ha, taxonomy, crosswalk)
    parcels = Parcels(frame.geometry.reset_index(drop=True), classes.leaf)
    note = {
        "file": str(path),
        "parcels": int(len(frame)),
        "dropped_empty": int(empty.sum()),
        "repaired": int(invalid.sum()),
        "content_sha256": digest,
    }
    return parcels, classes, note


def _read(gpd, path: Path, code_column: str):
    import pyogrio

    try:
        fields = list(pyogrio.read_info(path)["fields"])
    except Exception as error:  # pyogrio raises DataSourceError and others for what GDAL cannot open
        raise CrosswalkError(f"{path}: not a vector file GDAL reads ({error})") from None
    check_code_column(fields, code_column, str(path))
    return gpd.read_file(path, columns=[code_column], engine="pyogrio")


def _content_digest(frame, code_column: str) -> str:
    import hashlib

    import shapely

    digest = hashlib.sha256(frame.crs.to_wkt().encode())
    digest.update("\x1f".join(map(str, frame[code_column].tolist())).encode())
    for wkb in shapely.to_wkb(frame.geometry.values):
        digest.update(wkb or b"")
    return digest.hexdigest()
