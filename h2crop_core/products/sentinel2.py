"""Sentinel-2 L2A scenes as delivered: SAFE products (folders or zips) read into :class:`Scene` records.

A scene is what one compositing step needs and nothing more: where each of the model's ten bands and the
scene classification (``SCL``) lie (a path GDAL opens: a file, or ``/vsizip/...`` inside a zip, or a URL), the
DN offset of each band and the quantification value from the product's own metadata (``MTD_MSIL2A.xml``), its
acquisition time, CRS and footprint. Pixels are read later, window by window (:mod:`h2crop_core.compositing`).
STAC catalogs give the same records (:mod:`h2crop_core.products.stac`).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError

#: the model's Sentinel-2 bands, in the order of the benchmark's S2 array (10, 20 m bands after the 10 m
#: ones as ESA numbers them; see docs/products.md for what this order rests on)
MODEL_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: the SAFE file name of each model band, and the bands delivered at 10 m (the rest at 20 m, as SCL)
SAFE_NAMES: dict[str, str] = {band: band if band == "B8A" else f"B{int(band[1:]):02d}" for band in MODEL_BANDS}
TEN_METRE: frozenset[str] = frozenset({"B2", "B3", "B4", "B8"})
#: ``band_id`` of each band in MTD_MSIL2A.xml's BOA_ADD_OFFSET list
BAND_IDS: dict[str, int] = {
    "B1": 0, "B2": 1, "B3": 2, "B4": 3, "B5": 4, "B6": 5, "B7": 6, "B8": 7, "B8A": 8, "B9": 9, "B10": 10, "B11": 11, "B12": 12,
}  # fmt: skip
#: processing baseline from which L2A DNs carry BOA_ADD_OFFSET (25 January 2022)
OFFSET_BASELINE = (4, 0)
METADATA = "MTD_MSIL2A.xml"


@dataclass(frozen=True)
class Scene:
    """One Sentinel-2 L2A acquisition of one tile.

    Attributes:
        id: the product name (``S2A_MSIL2A_20230615T105031_N0509_R051_T31UDQ_...``) or the STAC item id.
        time: acquisition time, ISO 8601 (UTC).
        bands: model band name -> a path GDAL opens.
        scl: the scene classification layer's path.
        offsets: model band name -> DN offset (reflectance = (DN + offset) / quantification).
        quantification: BOA_QUANTIFICATION_VALUE (10,000 for every baseline so far).
        baseline: processing baseline (``"05.09"``), "" where the source does not say.
        offset_rule: where the offsets come from (the product's metadata, or the baseline).
        crs, bounds: the CRS and (west, south, east, north) of the scene's grid, in that CRS.
        source: the SAFE folder, zip or catalog the scene was read from.
    """

    id: str
    time: str
    bands: dict[str, str]
    scl: str
    offsets: dict[str, float]
    quantification: float
    baseline: str
    offset_rule: str
    crs: str
    bounds: tuple[float, float, float, float]
    source: str
    cloud_cover: float | None = field(default=None)

    @property
    def month(self) -> int:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00")).month

    @property
    def year(self) -> int:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00")).year

    def to_dict(self) -> dict:
        return {**asdict(self), "bounds": list(self.bounds)}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(**{**data, "bounds": tuple(data["bounds"])})


def baseline_offset(baseline: str) -> float:
    """The DN offset of every band at a processing baseline: -1000 from 04.00 on, 0 before."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", baseline or "")
    if not match:
        raise SettingError(f"processing baseline {baseline!r} is not of the form NN.NN (e.g. 05.09)")
    return -1000.0 if (int(match.group(1)), int(match.group(2))) >= OFFSET_BASELINE else 0.0


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((element for element in root.iter() if _local(element.tag) == name), None)


def parse_metadata(text: str, where: str) -> dict:
    """The parts of ``MTD_MSIL2A.xml`` compositing needs: time, baseline, quantification, offsets per band,
    the image files and the cloud cover.

    Raises:
        RegionError: not an L2A product metadata file, or a field missing (naming ``where``).
    """
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise RegionError(f"{where}: not readable XML ({error})") from None
    fields = {
        name: _find(root, name) for name in ("PRODUCT_START_TIME", "PROCESSING_BASELINE", "BOA_QUANTIFICATION_VALUE")
    }
    missing = [name for name, element in fields.items() if element is None or not (element.text or "").strip()]
    if missing:
        raise RegionError(f"{where}: no {', '.join(missing)}; expected a Sentinel-2 L2A product's {METADATA}")
    baseline = fields["PROCESSING_BASELINE"].text.strip()
    listed = {
        int(element.get("band_id", -1)): float(element.text)
        for element in root.iter()
        if _local(element.tag) == "BOA_ADD_OFFSET"
    }
    if listed:
        offsets, rule = {band: listed.get(BAND_IDS[band], 0.0) for band in MODEL_BANDS}, f"{METADATA} BOA_ADD_OFFSET"
    else:  # before baseline 04.00 the list does not exist: the DNs carry no offset
        offsets = dict.fromkeys(MODEL_BANDS, 0.0)
        rule = f"{METADATA}: no BOA_ADD_OFFSET (baseline {baseline})"
    cloud = _find(root, "Cloud_Coverage_Assessment")
    return {
        "time": fields["PRODUCT_START_TIME"].text.strip(),
        "baseline": baseline,
        "quantification": float(fields["BOA_QUANTIFICATION_VALUE"].text),
        "offsets": offsets,
        "offset_rule": rule,
        "images": [element.text.strip() for element in root.iter() if _local(element.tag) == "IMAGE_FILE"],
        "cloud_cover": float(cloud.text) if cloud is not None and cloud.text else None,
    }


def _pick_image(images: list[str], band: str, resolution: int, where: str) -> str:
    suffix = f"_{band}_{resolution}m"
    found = [image for image in images if image.endswith(suffix)]
    if not found:
        raise RegionError(f"{where}: {METADATA} lists no {band} image at {resolution} m (*{suffix})")
    return found[0]


class _Product:
    """A SAFE product's files, whether in a folder or a zip (read in place through GDAL's /vsizip/)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.root, self.names = path, None
            if not (path / METADATA).is_file():
                raise RegionError(f"{path}: no {METADATA}; expected a Sentinel-2 L2A SAFE folder")
            return
        try:
            with zipfile.ZipFile(path) as archive:
                self.names = set(archive.namelist())
        except zipfile.BadZipFile:
            raise RegionError(f"{path}: not a zip file; --scenes takes SAFE folders or their zips") from None
        tops = sorted(name[: -len(METADATA)] for name in self.names if name.endswith(METADATA))
        if not tops:
            raise RegionError(f"{path}: no {METADATA} inside; expected a zipped Sentinel-2 L2A SAFE product")
        self.root = tops[0]  # "S2A_MSIL2A_....SAFE/"

    def read_text(self, name: str) -> str:
        if self.names is None:
            return (self.root / name).read_text()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(f"{self.root}{name}").decode()

    def gdal_path(self, stem: str) -> str:
        """The GDAL path of an image listed without extension (JPEG 2000, or GeoTIFF in generated products)."""
        for extension in (".jp2", ".tif"):
            if self.names is None and (self.root / f"{stem}{extension}").is_file():
                return str(self.root / f"{stem}{extension}")
            if self.names is not None and f"{self.root}{stem}{extension}" in self.names:
                return f"/vsizip/{self.path}/{self.root}{stem}{extension}"
        raise RegionError(f"{self.path}: {stem}.jp2 is listed in {METADATA} but missing")


def read_safe(path: str | Path) -> Scene:
    """One SAFE product (a ``*.SAFE`` folder or a zip holding one) as a :class:`Scene`.

    Raises:
        RegionError: not an L2A product, or a file its metadata lists is missing (naming the file).
    """
    import rasterio

    path = Path(path).expanduser().resolve()
    product = _Product(path)
    meta = parse_metadata(product.read_text(METADATA), str(path / METADATA if path.is_dir() else path))
    where = str(path)
    bands = {
        band: product.gdal_path(_pick_image(meta["images"], SAFE_NAMES[band], 10 if band in TEN_METRE else 20, where))
        for band in MODEL_BANDS
    }
    scl = product.gdal_path(_pick_image(meta["images"], "SCL", 20, where))
    with rasterio.open(scl) as handle:
        crs, bounds = handle.crs.to_string(), tuple(handle.bounds)
    return Scene(
        id=path.name.removesuffix(".zip").removesuffix(".SAFE"),
        time=meta["time"],
        bands=bands,
        scl=scl,
        offsets=meta["offsets"],
        quantification=meta["quantification"],
        baseline=meta["baseline"],
        offset_rule=meta["offset_rule"],
        crs=crs,
        bounds=bounds,
        source=str(path),
        cloud_cover=meta["cloud_cover"],
    )


def safe_products(folder: Path) -> list[Path]:
    """The SAFE products in a folder: ``*.SAFE`` folders and zips holding one, in name order."""
    found = sorted(
        p for p in folder.iterdir() if (p.is_dir() and p.suffix == ".SAFE") or (p.is_file() and p.suffix == ".zip")
    )
    return found
