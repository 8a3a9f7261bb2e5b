"""A generated region's EnMAP scene written as an EnMAP L2A product as delivered, to test the product reader on.

The product (:mod:`h2crop_core.products.enmap_metadata` describes the layout) keeps the region's 30 m grid and
its 218 bands' values: band for band, a reader that picks bands by centre wavelength must give back the
region's ``enmap.tif`` exactly wherever the product is clear. Around that it has what a real product has:

* 224 bands, the six of the ~1,380 nm absorption (130-135) all no data and left out of the
  ``expectedChannelsList``;
* ``METADATA.XML`` with centre wavelengths shifted from the nominal table by a small product-specific amount
  (so band numbers still line up but the values differ from product to product), FWHMs (~6.5 nm VNIR,
  ~10 nm SWIR), gain 0.0001 and offset 0, the acquisition time and ``percentCloudCover``;
* quality layers: one cloud (bright in the spectral image, flagged in ``QL_QUALITY_CLOUD``), its shadow
  beside it (dark, ``QL_QUALITY_CLOUDSHADOW``), a small haze patch (``QL_QUALITY_HAZE``), a few defective
  pixels (``QL_PIXELMASK``), empty cirrus and snow layers, and the two quicklooks.

What it leaves out of real products: the L1 geometry, per-band quality beyond the pixel mask, the
``bandStatistics`` and the many descriptive tags of ``METADATA.XML``, and a swath that does not fill the grid.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree

import numpy as np
import rasterio
from rasterio.windows import Window

from h2crop_core.errors import SettingError
from h2crop_core.files import PARTIAL, write_atomic
from h2crop_core.products.enmap_metadata import METADATA, QUALITY_LAYERS, SPECTRAL_IMAGE
from h2crop_core.products.wavelengths import (
    BENCHMARK_BANDS,
    BENCHMARK_DROPPED,
    ENMAP_L2A_NOMINAL_NM,
    SWIR_BANDS,
    VNIR_BANDS,
)

NODATA = -32768
GAIN = 0.0001  # reflectance = DN * gain: DN is h2crop's reflectance × 10,000 unchanged
QUICKLOOK_BANDS = {"QL_VNIR.TIF": (48, 30, 16), "QL_SWIR.TIF": (200, 150, 100)}  # red, green, blue
_STRIP_ROWS = 64  # spectral image rows written at a time: memory stays flat in the region's size


@dataclass(frozen=True)
class GeneratedEnmapProduct:
    """What :func:`write_enmap_product` wrote.

    Attributes:
        path: the product folder, or its zip.
        name: the product's name (the prefix of its files).
        wavelengths_nm: the 224 centre wavelengths its ``METADATA.XML`` lists.
        flagged: pixels flagged per quality layer (file suffix -> count).
        cloud_cover: the ``percentCloudCover`` written.
    """

    path: Path
    name: str
    wavelengths_nm: tuple[float, ...]
    flagged: dict[str, int]
    cloud_cover: float


def write_enmap_product(
    enmap_tif: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    name: str | None = None,
    cloud: bool = True,
    zip_product: bool = False,
    wavelength_shift_nm: float = 0.4,
) -> GeneratedEnmapProduct:
    """Write ``enmap_tif`` (a generated region's 218-band EnMAP scene) as an EnMAP L2A product in ``out_dir``.

    Written in a staging folder and renamed into place (a zip: written beside and renamed), so the product
    is either absent or complete; an existing product of the same name is replaced.

    Args:
        enmap_tif: the region's ``enmap.tif`` (218 bands, reflectance × 10,000, int16).
        out_dir: the folder the product (``<NAME>/`` or ``<NAME>.ZIP``) is written into.
        seed: places the cloud, shadow, haze and defective pixels, jitters the centres, sets the date.
        name: the product's name; default ``ENMAP01-____L2A-DT...`` from the seed.
        cloud: write the cloud, shadow, haze and defective pixels (else every quality layer is clear).
        zip_product: write ``<NAME>.ZIP`` holding the folder instead of the folder.
        wavelength_shift_nm: how far every centre lies from the nominal table (plus up to ±0.1 nm per band).

    Raises:
        SettingError: ``enmap_tif`` does not have the benchmark's 218 bands.
    """
    rng = np.random.default_rng([seed, 28_224])
    start = datetime(2023, 6, 1, 10, 45, 26) + timedelta(days=seed % 120, seconds=seed % 50)
    name = name or (
        f"ENMAP01-____L2A-DT{1000 + seed:010d}_{start:%Y%m%dT%H%M%S}Z_001_V010402_"
        f"{start + timedelta(days=5):%Y%m%dT%H%M%S}Z"
    )
    out_dir = Path(out_dir)
    with rasterio.open(enmap_tif) as src:
        if src.count != len(BENCHMARK_BANDS):
            raise SettingError(f"{enmap_tif}: {src.count} bands; a generated EnMAP scene has {len(BENCHMARK_BANDS)}")
        layers = _quality_layers(src.height, src.width, rng, cloud)
        centres, fwhm = _band_table(rng, wavelength_shift_nm)
        cover = round(100.0 * float((layers["QL_QUALITY_CLOUD.TIF"] > 0).mean()), 3)
        staging = out_dir / f".{name}{PARTIAL}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / name).mkdir(parents=True)
        try:
            folder = staging / name
            _write_spectral(src, folder / f"{name}-{SPECTRAL_IMAGE}", layers, centres, rng)
            _write_layers(src, folder, name, layers)
            (folder / f"{name}-{METADATA}").write_bytes(_metadata_xml(centres, fwhm, start, cover))
            path = _publish(folder, out_dir, name, zip_product)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    flagged = {suffix: int((layer > 0).sum()) for suffix, layer in layers.items()}
    return GeneratedEnmapProduct(path, name, tuple(centres.tolist()), flagged, cover)


def _band_table(rng: np.random.Generator, shift_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """The product's 224 centres (nominal + shift + a jitter of up to ±0.1 nm) and FWHMs (nm)."""
    nominal = np.asarray(ENMAP_L2A_NOMINAL_NM)
    centres = np.round(nominal + shift_nm + rng.uniform(-0.1, 0.1, nominal.size), 3)
    vnir = np.isin(np.arange(1, nominal.size + 1), list(VNIR_BANDS))
    fwhm = np.where(vnir, 6.5 + rng.uniform(-0.3, 0.3, nominal.size), 10.0 + rng.uniform(-0.5, 0.5, nominal.size))
    return centres, np.round(fwhm, 3)


def _blob(shape: tuple[int, int], centre: tuple[float, float], radius: float, rng: np.random.Generator) -> np.ndarray:
    """A lumpy disk: its radius varies with the angle, as a cloud's edge does."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    edge = radius * (1 + 0.2 * np.sin(3 * np.arctan2(dy, dx) + rng.uniform(0, 2 * np.pi)))
    return np.hypot(dy, dx) <= edge


def _quality_layers(height: int, width: int, rng: np.random.Generator, cloud: bool) -> dict[str, np.ndarray]:
    """The quality layers (suffix -> uint8, 1 = flagged): a cloud, its shadow to the east-south-east, a
    haze patch clear of both, four defective pixels elsewhere; all clear without ``cloud``."""
    layers = {suffix: np.zeros((height, width), dtype=np.uint8) for suffix in QUALITY_LAYERS}
    if not cloud:
        return layers
    radius = max(2.0, 0.12 * min(height, width))
    cy, cx = rng.uniform(radius, height - 1.8 * radius), rng.uniform(radius, width - 2.8 * radius)
    cloud_mask = _blob((height, width), (cy, cx), radius, rng)
    shadow = _blob((height, width), (cy + 0.6 * radius, cx + 1.6 * radius), radius, rng) & ~cloud_mask
    taken = cloud_mask | shadow
    haze_radius = max(1.5, 0.06 * min(height, width))
    for _ in range(50):  # a haze patch clear of the cloud and its shadow
        centre = rng.uniform(haze_radius, np.array([height, width]) - haze_radius)
        haze = _blob((height, width), (centre[0], centre[1]), haze_radius, rng)
        if not (haze & taken).any():
            break
    taken |= haze
    free = np.flatnonzero(~taken.ravel())
    defective = np.zeros(height * width, dtype=bool)
    defective[rng.choice(free, size=min(4, free.size), replace=False)] = True
    for suffix, mask in (
        ("QL_QUALITY_CLOUD.TIF", cloud_mask),
        ("QL_QUALITY_CLOUDSHADOW.TIF", shadow),
        ("QL_QUALITY_HAZE.TIF", haze & ~(cloud_mask | shadow)),
        ("QL_PIXELMASK.TIF", defective.reshape(height, width)),
    ):
        layers[suffix][mask] = 1
    return layers


def _profile(src: rasterio.io.DatasetReader, count: int, dtype: str, nodata: float | None) -> dict:
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": count,
        "dtype": dtype,
        "crs": src.crs,
        "transform": src.transform,
        "nodata": nodata,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "interleave": "band",
    }


def _write_spectral(
    src: rasterio.io.DatasetReader, path: Path, layers: dict[str, np.ndarray], centres: np.ndarray, rng
) -> None:
    """The 224-band image: the region's bands where clear; the cloud bright (a flat white spectrum falling
    off into the SWIR), its shadow dark, the haze brighter towards the blue, defective pixels 0; the six
    absorption bands no data throughout, and so is wherever the scene has none."""
    kept = np.asarray(BENCHMARK_BANDS) - 1
    cloud_spectrum = (0.75 - 0.2 * (centres[kept] - 400.0) / 2050.0) / GAIN
    haze_spectrum = 0.06 * (500.0 / centres[kept]) ** 2 / GAIN
    with rasterio.open(path, "w", **_profile(src, len(centres), "int16", NODATA)) as dst:
        dst.descriptions = tuple(f"band {b} ({c:.3f} nm)" for b, c in enumerate(centres, start=1))
        for top in range(0, src.height, _STRIP_ROWS):
            rows = slice(top, min(top + _STRIP_ROWS, src.height))
            window = Window(0, top, src.width, rows.stop - rows.start)
            scene = src.read(window=window, masked=True)  # (218, h, W)
            values = np.ma.getdata(scene).astype(np.float64)
            part = {suffix: layer[rows] > 0 for suffix, layer in layers.items()}
            values[:, part["QL_QUALITY_CLOUDSHADOW.TIF"]] *= 0.35
            values[:, part["QL_QUALITY_HAZE.TIF"]] = (
                0.85 * values[:, part["QL_QUALITY_HAZE.TIF"]] + haze_spectrum[:, None]
            )
            cloudy = part["QL_QUALITY_CLOUD.TIF"]
            values[:, cloudy] = cloud_spectrum[:, None] + rng.normal(0, 80, (len(kept), int(cloudy.sum())))
            values[:, part["QL_PIXELMASK.TIF"]] = 0
            image = np.full((len(centres), *values.shape[1:]), NODATA, dtype=np.int16)
            image[kept] = np.where(np.ma.getmaskarray(scene), NODATA, np.clip(np.rint(values), -32767, 32767))
            dst.write(image, window=window)


def _write_layers(src: rasterio.io.DatasetReader, folder: Path, name: str, layers: dict[str, np.ndarray]) -> None:
    """The quality layers (uint8, no nodata: 0 is clear) and the two 3-band quicklooks, from the image written."""
    for suffix, layer in layers.items():
        with rasterio.open(folder / f"{name}-{suffix}", "w", **_profile(src, 1, "uint8", None)) as dst:
            dst.write(layer[None])
    with rasterio.open(folder / f"{name}-{SPECTRAL_IMAGE}") as image:
        for suffix, bands in QUICKLOOK_BANDS.items():
            rgb = image.read(list(bands), masked=True).astype(np.float64)
            quicklook = np.clip(np.ma.filled(rgb, 0) / 4000.0 * 255.0, 0, 255).astype(np.uint8)
            profile = _profile(src, 3, "uint8", None) | {"photometric": "RGB", "interleave": "pixel"}
            with rasterio.open(folder / f"{name}-{suffix}", "w", **profile) as dst:
                dst.write(quicklook)


def _metadata_xml(centres: np.ndarray, fwhm: np.ndarray, start: datetime, cloud_cover: float) -> bytes:
    """``METADATA.XML``: the tags an L2A product's metadata has that a reader needs (and no others)."""
    root = ElementTree.Element("level_X")
    specific = ElementTree.SubElement(root, "specific")
    ElementTree.SubElement(specific, "datatakeStart").text = f"{start:%Y-%m-%dT%H:%M:%S}.000Z"
    ElementTree.SubElement(specific, "numberOfBands").text = str(len(centres))
    table = ElementTree.SubElement(specific, "bandCharacterisation")
    for number, (centre, width) in enumerate(zip(centres, fwhm), start=1):
        band = ElementTree.SubElement(table, "bandID", number=str(number))
        for tag, value in (
            ("wavelengthCenterOfBand", f"{centre:.3f}"),
            ("FWHMOfBand", f"{width:.3f}"),
            ("GainOfBand", f"{GAIN:g}"),
            ("OffsetOfBand", "0"),
        ):
            ElementTree.SubElement(band, tag).text = value
    for detector, bands in (("vnir", VNIR_BANDS), ("swir", SWIR_BANDS)):
        quality = ElementTree.SubElement(specific, f"{detector}ProductQuality")
        listed = [b for b in bands if b not in BENCHMARK_DROPPED]
        ElementTree.SubElement(quality, "expectedChannelsList").text = ",".join(map(str, listed))
    product = ElementTree.SubElement(ElementTree.SubElement(root, "product"), "quality")
    ElementTree.SubElement(product, "percentCloudCover").text = f"{cloud_cover:g}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _publish(folder: Path, out_dir: Path, name: str, zip_product: bool) -> Path:
    """Move the finished product into place: the folder renamed, or a zip of it written atomically."""
    if zip_product:

        def write(file: BinaryIO) -> None:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(folder.iterdir()):
                    archive.write(path, f"{name}/{path.name}")

        return write_atomic(out_dir / f"{name}.ZIP", write)
    final = out_dir / name
    if final.exists():  # replaced: the old product moves aside first, so the rename below cannot fail on it
        old = out_dir / f".{name}.old{PARTIAL}"
        final.replace(old)
        shutil.rmtree(old)
    folder.replace(final)
    return final
