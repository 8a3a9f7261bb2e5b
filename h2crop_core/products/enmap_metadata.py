"""EnMAP L2A products as delivered: where their files are, and what their ``METADATA.XML`` says.

A product is a folder ``<NAME>/`` of files ``<NAME>-<SUFFIX>`` (``-METADATA.XML``, ``-SPECTRAL_IMAGE.TIF``,
``-QL_QUALITY_CLOUD.TIF`` ...), or a zip holding that folder (any member ending in ``-METADATA.XML`` names
one product, wherever it sits in the zip). ``--enmap`` may name a product folder, its zip, its
``METADATA.XML``, or a folder holding several products (folders or zips). A zip is never unpacked: its
metadata is read with :mod:`zipfile`, its rasters by GDAL through ``/vsizip/``.

Nothing here reads a raster, so naming and identifying the inputs of a map stays light; reading a product
onto a grid is :mod:`h2crop_core.products.enmap`.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

from h2crop_core.mapping.region import RegionError
from h2crop_core.products.wavelengths import VNIR_BANDS

METADATA = "METADATA.XML"
SPECTRAL_IMAGE = "SPECTRAL_IMAGE.TIF"
#: the quality layers of an L2A product (uint8 on the spectral image's grid; 0 = clear)
QUALITY_LAYERS = (
    "QL_PIXELMASK.TIF",
    "QL_QUALITY_CLOUD.TIF",
    "QL_QUALITY_CLOUDSHADOW.TIF",
    "QL_QUALITY_HAZE.TIF",
    "QL_QUALITY_CIRRUS.TIF",
    "QL_QUALITY_SNOW.TIF",
)
_DATE_IN_NAME = re.compile(r"_(\d{8}T\d{6})Z_")


@dataclass(frozen=True)
class EnmapBand:
    """One band of a product, as its ``bandCharacterisation`` lists it (``reflectance = DN * gain + offset``)."""

    number: int
    centre_nm: float
    fwhm_nm: float
    gain: float
    offset: float


@dataclass(frozen=True)
class EnmapProduct:
    """One EnMAP L2A product.

    Attributes:
        name: the product's name, the prefix of its files.
        location: where it was found: its folder, or its zip (a local path; named in messages).
        prefix: the GDAL path of its files less the suffix: ``<folder>/<NAME>-`` or ``/vsizip/<zip>/.../<NAME>-``.
        bands: every band of the metadata, in band order (empty ones included).
        vnir, swir: the band numbers each detector's ``expectedChannelsList`` lists (not empty).
        start: the acquisition (``datatakeStart``, else the date in the name), if known.
        cloud_cover: ``percentCloudCover`` (0-100), if the metadata has it.
    """

    name: str
    location: str
    prefix: str
    bands: tuple[EnmapBand, ...]
    vnir: frozenset[int]
    swir: frozenset[int]
    start: datetime | None
    cloud_cover: float | None

    def file(self, suffix: str) -> str:
        """The GDAL path of the product's file ``<NAME>-<suffix>``."""
        return self.prefix + suffix

    @property
    def in_zip(self) -> bool:
        return self.prefix.startswith("/vsizip/")

    @property
    def filled(self) -> tuple[EnmapBand, ...]:
        """The bands with data: those an ``expectedChannelsList`` lists (the others are all no data)."""
        return tuple(band for band in self.bands if band.number in self.vnir | self.swir)

    def local_files(self, suffixes: tuple[str, ...]) -> list[Path]:
        """The files on disk holding ``suffixes``: the zip itself, or each such file of the folder."""
        if self.in_zip:
            return [Path(self.location)]
        return [Path(self.file(suffix)) for suffix in suffixes if Path(self.file(suffix)).is_file()]


def is_product_path(path: str | Path) -> bool:
    """Whether ``path`` names products (a folder, a zip, a ``METADATA.XML``) rather than one raster."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() == ".zip" or path.name.upper().endswith("-" + METADATA)


def find_products(path: str | Path) -> list[EnmapProduct]:
    """The products ``path`` names: a product folder, its zip or ``METADATA.XML``, or a folder of products.

    Raises:
        RegionError: ``path`` holds no product, a zip that cannot be read, or metadata that cannot be parsed.
    """
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() == ".zip":
        return _zip_products(path)
    if path.is_file() and path.name.upper().endswith("-" + METADATA):
        return [_folder_product(path)]
    if path.is_dir():
        own = _metadata_in(path)
        if own is not None:
            return [_folder_product(own)]
        products: list[EnmapProduct] = []
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            if child.is_dir() and _metadata_in(child) is not None:
                products.append(_folder_product(_metadata_in(child)))
            elif child.is_file() and child.suffix.lower() == ".zip":
                products.extend(_zip_products(child))
        if products:
            return products
    raise RegionError(
        f"{path}: no EnMAP L2A product (a folder of <NAME>-METADATA.XML, <NAME>-SPECTRAL_IMAGE.TIF ..., its zip, "
        "or a folder of such products)"
    )


def _metadata_in(folder: Path) -> Path | None:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.upper().endswith("-" + METADATA))
    if len(found) > 1:
        raise RegionError(f"{folder}: {len(found)} METADATA.XML files; a product folder holds one product")
    return found[0] if found else None


def _folder_product(metadata: Path) -> EnmapProduct:
    prefix = str(metadata)[: -len(METADATA)]
    return parse_metadata(metadata.read_bytes(), str(metadata), str(metadata.parent), prefix)


def _zip_products(archive: Path) -> list[EnmapProduct]:
    try:
        with zipfile.ZipFile(archive) as opened:
            members = [m for m in opened.namelist() if m.upper().endswith("-" + METADATA)]
            products = [
                parse_metadata(
                    opened.read(member),
                    f"{archive}/{member}",
                    str(archive),
                    f"/vsizip/{archive}/{member[: -len(METADATA)]}",
                )
                for member in members
            ]
    except (OSError, zipfile.BadZipFile) as error:
        raise RegionError(f"{archive}: not a readable zip ({error}); expected a zipped EnMAP L2A product") from error
    if not products:
        raise RegionError(f"{archive}: no <NAME>-METADATA.XML inside; expected a zipped EnMAP L2A product")
    return products


def parse_metadata(data: bytes, where: str, location: str, prefix: str) -> EnmapProduct:
    """An :class:`EnmapProduct` from the bytes of its ``METADATA.XML`` (``where`` names that file in messages).

    Tags are matched by local name (a namespace prefix is ignored). Without ``expectedChannelsList`` every
    band counts as filled (VNIR: bands 1-91).

    Raises:
        RegionError: not XML, no ``bandCharacterisation``, a band without centre, FWHM, gain or offset.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise RegionError(f"{where}: not XML ({error}); expected an EnMAP L2A METADATA.XML") from error
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    bands = tuple(_band(entry, where) for entry in root.iterfind(".//bandCharacterisation/bandID"))
    if not bands:
        raise RegionError(f"{where}: no bandCharacterisation/bandID entries; expected an EnMAP L2A METADATA.XML")
    count = (root.findtext(".//numberOfBands") or "").strip()
    if count and count != str(len(bands)):
        raise RegionError(f"{where}: numberOfBands is {count} but bandCharacterisation lists {len(bands)} bands")
    vnir, swir = (
        _channels(root.findtext(f".//{part}ProductQuality/expectedChannelsList")) for part in ("vnir", "swir")
    )
    if vnir is None and swir is None:
        vnir = frozenset(b.number for b in bands if b.number in VNIR_BANDS)
        swir = frozenset(b.number for b in bands) - vnir
    name = Path(where).name[: -len("-" + METADATA)]
    cloud = root.findtext(".//percentCloudCover")
    return EnmapProduct(
        name=name,
        location=location,
        prefix=prefix,
        bands=bands,
        vnir=vnir or frozenset(),
        swir=swir or frozenset(),
        start=_start(root.findtext(".//datatakeStart"), name),
        cloud_cover=float(cloud) if cloud not in (None, "") else None,
    )


def _band(entry: ElementTree.Element, where: str) -> EnmapBand:
    values = {}
    for tag in ("wavelengthCenterOfBand", "FWHMOfBand", "GainOfBand", "OffsetOfBand"):
        text = entry.findtext(tag)
        try:
            values[tag] = float(text)
        except (TypeError, ValueError):
            raise RegionError(f"{where}: bandID {entry.get('number')} has {tag} {text!r}; expected a number") from None
    number = entry.get("number", "")
    if not number.isdigit():
        raise RegionError(f"{where}: a bandID has number {number!r}; expected the band's number (1-224)")
    return EnmapBand(int(number), *values.values())


def _channels(text: str | None) -> frozenset[int] | None:
    if text is None:
        return None
    return frozenset(int(part) for part in re.split(r"[,\s]+", text.strip()) if part)


def _start(text: str | None, name: str) -> datetime | None:
    """The acquisition time: ``datatakeStart``, else the first date in the product's name."""
    if text:
        try:
            return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            pass
    match = _DATE_IN_NAME.search(name)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S") if match else None


def product_files(path: str | Path) -> list[Path]:
    """The files on disk that hold the products ``path`` names (metadata, spectral image, quality layers; a
    zip whole), once each: what identifies their content."""
    files: dict[Path, None] = {}
    for product in find_products(path):
        files.update(dict.fromkeys(product.local_files((METADATA, SPECTRAL_IMAGE, *QUALITY_LAYERS))))
    return list(files)
