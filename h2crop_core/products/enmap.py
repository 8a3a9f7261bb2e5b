"""EnMAP L2A products read as delivered, onto the map's grid: bands picked by centre wavelength, flagged
pixels masked, the product's scale applied.

* **Bands**: each wavelength the model reads is matched to a band the product fills (one its
  ``expectedChannelsList`` lists) whose centre lies within half that band's FWHM, one band per wavelength
  (a linear assignment on |Δλ|, so two wavelengths never take one band). Where the model's wavelengths
  list the VNIR detector's bands and then the SWIR's (one step back near 900 nm, as the product's own band
  order and the benchmark's 218 do), each is matched within its detector: in the 900-1000 nm overlap the
  two detectors' bands lie ~2 nm apart, and centres that moved in opposite directions could otherwise trade
  places. A wavelength without a band is refused, naming it and the product.
* **Masks**: pixels flagged (non-zero) in any layer of :data:`MASK_LAYERS` are no data. They are masked on
  the product's own grid before any warping, so no flagged pixel is averaged into a clear one.
* **Scale**: value = (DN × GainOfBand + OffsetOfBand) × 10,000, rounded to int16: h2crop's EnMAP
  convention (reflectance × 10,000, nodata -32,768), what the published statistics and ``h2crop synth`` use.
* **Several products**: a pixel comes from the first product, in the order of :func:`order_products`, in
  which it is clear (inside the image, not flagged); its whole spectrum comes from that one product.

A plain GeoTIFF is not a product: :func:`open_enmap_source` reads it as before (bands by index).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from h2crop_core.mapping.grid_source import GridSource, read_window
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.enmap_metadata import SPECTRAL_IMAGE, EnmapProduct, find_products, is_product_path

#: The quality layers whose flagged pixels are no data: cloud, cloud shadow, haze and the pixel mask
#: (defective detector elements, saturation). Cirrus and snow are left out by default: thin cirrus and snow
#: cover leave usable spectra more often than not over crops, and the benchmark's statistics give no sign
#: they were removed; ask for them with ``mask_layers=MASK_LAYERS + OPTIONAL_MASK_LAYERS``.
MASK_LAYERS: tuple[str, ...] = (
    "QL_QUALITY_CLOUD.TIF",
    "QL_QUALITY_CLOUDSHADOW.TIF",
    "QL_QUALITY_HAZE.TIF",
    "QL_PIXELMASK.TIF",
)
#: quality layers read only when asked for
OPTIONAL_MASK_LAYERS: tuple[str, ...] = ("QL_QUALITY_CIRRUS.TIF", "QL_QUALITY_SNOW.TIF")
#: no data in a product's spectral image and in what is read from it
PRODUCT_NODATA = -32768
#: h2crop's EnMAP values: reflectance × this
REFLECTANCE_SCALE = 10_000.0
_UNMATCHED = 1e6  # the cost of a pair further apart than half a band width: taken only if nothing else is


def _detector_split(wanted: np.ndarray) -> np.ndarray | None:
    """Which wanted wavelengths are VNIR: those before the one step back in the list, if it has exactly one
    (VNIR bands first, then SWIR, as a product lists them); None if the list says nothing about detectors."""
    steps = np.flatnonzero(np.diff(wanted) < 0)
    if len(steps) != 1:
        return None
    return np.arange(len(wanted)) <= steps[0]


def _where(product: EnmapProduct) -> str:
    return product.location if Path(product.location).stem == product.name else f"{product.location} ({product.name})"


def match_bands(product: EnmapProduct, wanted_nm: Sequence[float]) -> tuple[int, ...]:
    """The product's band numbers for ``wanted_nm`` (centre wavelengths, nm), in their order.

    Raises:
        RegionError: a wavelength has no filled band within half that band's FWHM (named with the product
            and the nearest band).
    """
    from scipy.optimize import linear_sum_assignment  # scipy's import is slow; only products need it

    filled = product.filled
    centre = np.array([band.centre_nm for band in filled])
    half_width = np.array([band.fwhm_nm for band in filled]) / 2
    wanted = np.asarray(wanted_nm, dtype=float)
    distance = np.abs(wanted[:, None] - centre[None, :])
    allowed = distance <= half_width[None, :] + 1e-9
    wanted_vnir = _detector_split(wanted)
    if wanted_vnir is not None:
        band_vnir = np.array([band.number in product.vnir for band in filled])
        allowed &= wanted_vnir[:, None] == band_vnir[None, :]
    rows, cols = linear_sum_assignment(np.where(allowed, distance, _UNMATCHED))
    picked = dict(zip(rows.tolist(), cols.tolist()))
    missing = [i for i in range(len(wanted)) if i not in picked or not allowed[i, picked[i]]]
    if missing:
        raise RegionError(_missing_message(product, wanted, missing))
    return tuple(filled[picked[i]].number for i in range(len(wanted)))


def _missing_message(product: EnmapProduct, wanted: np.ndarray, missing: list[int]) -> str:
    first = wanted[missing[0]]
    nearest = min(product.bands, key=lambda band: abs(band.centre_nm - first))
    filled = {band.number for band in product.filled}
    about = (
        f"band {nearest.number} at {nearest.centre_nm:.1f} nm, FWHM {nearest.fwhm_nm:.1f} nm"
        + ("" if nearest.number in filled else ", which the product marks empty")
        + (f"; {len(missing)} wavelengths lack a band" if len(missing) > 1 else "")
    )
    return (
        f"{_where(product)}: no band for the model's {first:.1f} nm (nearest: {about}); an EnMAP product's bands "
        "are picked by centre wavelength, each within half its FWHM"
    )


def cloud_share(product: EnmapProduct, mask_layers: tuple[str, ...] = MASK_LAYERS) -> float:
    """The product's cloudiness in percent: ``percentCloudCover``, else the share of its pixels flagged in
    ``mask_layers`` (read whole: the quality layers are small, one byte per 30 m pixel)."""
    if product.cloud_cover is not None:
        return product.cloud_cover
    flagged = None
    for layer in mask_layers:
        with rasterio.open(product.file(layer)) as handle:
            marked = handle.read(1) != 0
        flagged = marked if flagged is None else flagged | marked
    return 100.0 * float(flagged.mean()) if flagged is not None else 0.0


def order_products(products: Sequence[EnmapProduct], mask_layers: tuple[str, ...] = MASK_LAYERS) -> list:
    """The order pixels are taken in: least cloud first (:func:`cloud_share`), then earliest acquisition
    (then name, so the order never depends on how the files are listed)."""
    return sorted(products, key=lambda p: (cloud_share(p, mask_layers), p.start or datetime.max, p.name))


class ProductSource:
    """One product read on a target grid: the model's bands (1..N, picked by wavelength), masked and scaled.

    Args:
        product: the product.
        crs, transform: the target grid.
        resampling: how the spectral image is warped where it does not lie on the grid.
        wavelengths_nm: the model's centre wavelengths, in its order.
        mask_layers: the quality layers whose flagged pixels are no data.
    """

    def __init__(
        self,
        product: EnmapProduct,
        crs,
        transform: Affine,
        resampling: str,
        wavelengths_nm: Sequence[float],
        mask_layers: tuple[str, ...] = MASK_LAYERS,
    ) -> None:
        self.product, self.bands = product, match_bands(product, wavelengths_nm)
        by_number = {band.number: band for band in product.bands}
        self._scale = {
            n: (by_number[n].gain * REFLECTANCE_SCALE, by_number[n].offset * REFLECTANCE_SCALE) for n in self.bands
        }
        self._masks: list = []
        self.image = None
        try:
            self.image = GridSource(
                product.file(SPECTRAL_IMAGE), crs, transform, resampling, nodata=PRODUCT_NODATA, prepare=self._prepare
            )
            self._check_image()
            for layer in mask_layers:
                self._masks.append(rasterio.open(product.file(layer)))
                self._check_layer(self._masks[-1], layer)
        except RasterioIOError as error:
            self.close()
            raise RegionError(
                f"{_where(product)}: a file cannot be read ({error}); an EnMAP L2A product has it"
            ) from error
        except BaseException:
            self.close()
            raise

    def _check_image(self) -> None:
        count = self.image.source.count
        if count != len(self.product.bands):
            raise RegionError(
                f"{self.product.file(SPECTRAL_IMAGE)}: {count} bands; its METADATA.XML lists {len(self.product.bands)}"
            )

    def _check_layer(self, handle, layer: str) -> None:
        image = self.image.source
        if handle.shape != image.shape or not handle.transform.almost_equals(image.transform):
            raise RegionError(
                f"{self.product.file(layer)}: {handle.shape} pixels at {tuple(handle.transform)[:6]}, not on the "
                f"spectral image's grid ({image.shape} at {tuple(image.transform)[:6]})"
            )

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def warped(self) -> bool:
        return self.image.warped

    def _prepare(self, data: np.ma.MaskedArray, window: Window, indexes: list[int]) -> np.ma.MaskedArray:
        """What is read of the spectral image (product bands ``indexes``, its own grid): flagged pixels
        masked, the scale applied, int16."""
        flagged = np.zeros((window.height, window.width), dtype=bool)
        for handle in self._masks:
            flagged |= np.ma.filled(read_window(handle, window, [1])[0], 0) != 0
        raw = np.ma.getdata(data)
        gain = np.array([self._scale[n][0] for n in indexes], dtype=np.float64)[:, None, None]
        offset = np.array([self._scale[n][1] for n in indexes], dtype=np.float64)[:, None, None]
        value = np.clip(np.rint(raw * gain + offset), -32767, 32767).astype(np.int16)
        nodata = np.ma.getmaskarray(data) | (raw == PRODUCT_NODATA) | flagged[None]
        return np.ma.MaskedArray(value, mask=nodata)

    def read(self, window: Window, indexes: list[int]) -> np.ma.MaskedArray:
        """The model's bands ``indexes`` (1-based, in the model's order) under ``window`` of the target grid."""
        return self.image.read(window, [self.bands[i - 1] for i in indexes])

    def bounds_in(self, crs) -> tuple[float, float, float, float]:
        return self.image.bounds_in(crs)

    def close(self) -> None:
        for handle in [self.image, *self._masks]:
            if handle is not None:
                handle.close()
        self._masks = []


class EnmapSource:
    """One or several EnMAP products read on a target grid, with the interface of
    :class:`~h2crop_core.mapping.grid_source.GridSource`: ``count`` (the model's bands), ``read(window,
    indexes)``, ``warped``, ``bounds_in(crs)``, ``close()``.

    A pixel comes from the first product (:func:`order_products`: least cloud, then earliest) in which it
    is clear; products that do not reach a window are not read for it.
    """

    def __init__(
        self,
        products: Sequence[EnmapProduct],
        crs,
        transform: Affine,
        resampling: str,
        wavelengths_nm: Sequence[float],
        mask_layers: tuple[str, ...] = MASK_LAYERS,
    ) -> None:
        self.crs, self.transform, self.wavelengths_nm = crs, transform, tuple(wavelengths_nm)
        self.parts: list[ProductSource] = []
        try:
            for product in order_products(products, mask_layers):
                self.parts.append(ProductSource(product, crs, transform, resampling, wavelengths_nm, mask_layers))
        except BaseException:
            self.close()
            raise
        self._bounds = [part.bounds_in(crs) for part in self.parts]

    @property
    def count(self) -> int:
        return len(self.wavelengths_nm)

    @property
    def warped(self) -> bool:
        return any(part.warped for part in self.parts)

    @property
    def products(self) -> list[EnmapProduct]:
        """The products, in the order pixels are taken from them."""
        return [part.product for part in self.parts]

    def read(self, window: Window, indexes: list[int]) -> np.ma.MaskedArray:
        left, bottom, right, top = window_bounds(window, self.transform)
        out = np.ma.masked_all((len(indexes), window.height, window.width), dtype=np.int16)
        empty = np.ones((window.height, window.width), dtype=bool)
        for part, (p_left, p_bottom, p_right, p_top) in zip(self.parts, self._bounds):
            if p_left >= right or p_right <= left or p_bottom >= top or p_top <= bottom:
                continue
            data = part.read(window, indexes)
            take = empty & ~np.ma.getmaskarray(data).all(axis=0)
            out[:, take] = data[:, take]
            empty &= ~take
            if not empty.any():
                break
        return out

    def bounds_in(self, crs) -> tuple[float, float, float, float]:
        """The union of the products' bounds in ``crs``."""
        bounds = np.array([part.bounds_in(crs) for part in self.parts])
        return (*bounds[:, :2].min(axis=0).tolist(), *bounds[:, 2:].max(axis=0).tolist())

    def describe(self) -> list[dict]:
        """Each product, in order: name, acquisition, cloud cover and the bands picked (for a run's record)."""
        return [
            {
                "name": part.product.name,
                "start": part.product.start.isoformat() if part.product.start else None,
                "cloud_cover": part.product.cloud_cover,
                "bands": list(part.bands),
            }
            for part in self.parts
        ]

    def close(self) -> None:
        for part in self.parts:
            part.close()
        self.parts = []


def open_enmap_source(
    path: str | Path,
    crs,
    transform: Affine,
    resampling: str,
    wavelengths_nm: Sequence[float] | None = None,
    *,
    mask_layers: tuple[str, ...] = MASK_LAYERS,
) -> GridSource | EnmapSource:
    """What ``--enmap`` names, read on the target grid (``crs``, ``transform``).

    A plain raster (GeoTIFF, VRT) is a :class:`~h2crop_core.mapping.grid_source.GridSource`, its bands read
    by index as before (``--enmap-bands``). A product folder, its zip or ``METADATA.XML``, or a folder of
    products is an :class:`EnmapSource` whose bands 1..N are the model's ``wavelengths_nm``.

    Raises:
        RegionError: products without ``wavelengths_nm``; a product that cannot be read or lacks a wavelength.
    """
    if not is_product_path(path):
        return GridSource(str(path), crs, transform, resampling)
    products = find_products(path)
    if wavelengths_nm is None:
        raise RegionError(
            f"{path}: an EnMAP product's bands are picked by centre wavelength, and the model's are not known (its "
            "checkpoint names none and it does not read the benchmark's 218 bands); give a plain GeoTIFF of its "
            "bands instead, picked with --enmap-bands"
        )
    return EnmapSource(products, crs, transform, resampling, wavelengths_nm, mask_layers)
