"""Read model tiles from the user's rasters: the same sample dict the ``.h5`` reader gives.

The S2 grid is the map's grid. EnMAP and the prior are read through a
:class:`~h2crop_core.mapping.grid_source.GridSource` on that grid (coarsened by the EnMAP factor for EnMAP):
a plain windowed read where the raster already lies on it (same CRS and pixel size, whole-pixel offset),
else GDAL's warper on the window asked for, so no input is ever held whole in memory. An EnMAP L2A product
(or a folder of them) is read through :func:`~h2crop_core.products.enmap.open_enmap_source`: its bands
picked by centre wavelength, its flagged pixels masked. Every check runs when the reader is built, before
any work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.schema import Sample, window_months
from h2crop_core.mapping.grid_source import GridSource, read_window
from h2crop_core.mapping.region import RegionError
from h2crop_core.mapping.sources import MapInputs
from h2crop_core.mapping.tiling import Tile
from h2crop_core.products.enmap import EnmapSource, open_enmap_source
from h2crop_core.products.wavelengths import BENCHMARK_ENMAP_NM
from h2crop_core.taxonomy import UNLABELLED

PRIOR_LEVELS = 4


def _model_wavelengths(given: tuple[float, ...] | None, bands: int) -> tuple[float, ...] | None:
    """The centre wavelengths the model's EnMAP bands are picked by: the checkpoint's, else the benchmark's
    218 for a model that reads 218 bands, else None (a product is then refused, a plain GeoTIFF read by
    index)."""
    if given is not None:
        if len(given) != bands:
            raise RegionError(f"the model reads {bands} EnMAP bands but names {len(given)} centre wavelengths")
        return tuple(given)
    return BENCHMARK_ENMAP_NM if bands == len(BENCHMARK_ENMAP_NM) else None


class RegionReader:
    """Reads tiles of one set of inputs for one model.

    Args:
        inputs: the rasters (:class:`~h2crop_core.mapping.sources.MapInputs`).
        window: the model's temporal window (its first T months are read).
        modalities: the model's inputs (``s2``, ``enmap``, ``prior``).
        stats: normalisation of the training data; S2 and EnMAP come back as float32 z-scores.
        s2_bands, enmap_bands, factor: what the model expects.
        resampling: how EnMAP is warped where it does not lie on the grid (the prior: always nearest).
        enmap_wavelengths: the centre wavelengths (nm) of the model's EnMAP bands, in its order: how the
            bands of an EnMAP product are picked. None: the benchmark's 218 (nominal EnMAP L2A centres) for
            a model that reads 218 bands. A plain GeoTIFF is read by band index, as before.

    Raises:
        RegionError: naming the file and the mismatch: a band count the model cannot use, fewer months than
            the window, monthly files on different grids, inputs that do not overlap, a missing input.
    """

    def __init__(
        self,
        inputs: MapInputs,
        window: str | int,
        modalities: tuple[str, ...],
        stats: NormStats,
        *,
        s2_bands: int,
        enmap_bands: int,
        factor: int,
        resampling: str = "average",
        enmap_wavelengths: tuple[float, ...] | None = None,
    ) -> None:
        self.inputs, self.modalities, self.stats = inputs, modalities, stats
        self.months, self.factor, self.s2_bands = window_months(window), factor, s2_bands
        self._s2: list[rasterio.DatasetReader] = []
        self._sources: dict[str, GridSource | EnmapSource] = {}
        try:
            self._open_s2()
            first = self._s2[0]
            if first.crs is None:
                raise RegionError(f"{inputs.s2[0]}: has no CRS; the S2 grid is the map's and must be georeferenced")
            if "enmap" in modalities:
                wavelengths = _model_wavelengths(enmap_wavelengths, enmap_bands)
                self._open("enmap", inputs.enmap, first.transform @ Affine.scale(factor), resampling, wavelengths)
                self.enmap_indexes = self._enmap_indexes(enmap_bands)
            if "prior" in modalities:
                self._open("prior", inputs.prior, first.transform, "nearest")
                if self._sources["prior"].count != PRIOR_LEVELS:
                    raise RegionError(
                        f"{inputs.prior}: {self._sources['prior'].count} bands; a prior crop map has {PRIOR_LEVELS} (levels 1-4)"
                    )
        except BaseException:
            self.close()  # refused inputs leave no raster open
            raise

    def _open_s2(self) -> None:
        if self.inputs.s2_months:
            self._open_monthly()
            return
        path = self.inputs.s2[0]
        self._s2, self._months = [rasterio.open(path)], ()
        count = self._s2[0].count
        if count % self.s2_bands:
            raise RegionError(
                f"{path}: {count} bands is not a whole number of months of {self.s2_bands} bands (month-major: band = month × {self.s2_bands} + band)"
            )
        if count // self.s2_bands < self.months:
            raise RegionError(
                f"{path}: {count} bands = {count // self.s2_bands} months; the model's window needs {self.months} (January first)"
            )

    def _open_monthly(self) -> None:
        """Open (and check) the files of the window's months only."""
        by_month = dict(zip(self.inputs.s2_months, self.inputs.s2))
        missing = sorted(set(range(1, self.months + 1)) - set(by_month))
        if missing:
            raise RegionError(
                f"{Path(self.inputs.s2[0]).parent}: no file for month(s) {missing} (found {list(by_month)}); "
                f"the model's window needs months 1-{self.months}"
            )
        self._months = tuple(range(1, self.months + 1))
        files = [by_month[m] for m in self._months]
        self._s2 = [rasterio.open(path) for path in files]
        first = self._s2[0]
        for path, handle in zip(files, self._s2):
            if handle.count != self.s2_bands:
                raise RegionError(f"{path}: {handle.count} bands; a monthly S2 file has {self.s2_bands}")
            if (handle.crs, handle.shape) != (first.crs, first.shape) or not handle.transform.almost_equals(
                first.transform
            ):
                raise RegionError(
                    f"{path}: not on the grid of {files[0]} ({handle.crs} {handle.shape} vs {first.crs} "
                    f"{first.shape}); monthly files must share one grid"
                )

    def _open(
        self, role: str, path: str | None, transform: Affine, resampling: str, wavelengths: tuple | None = None
    ) -> None:
        if path is None:
            raise RegionError(f"the model reads {role}; give it with --{role}")
        s2 = self._s2[0]
        if role == "enmap":
            source = open_enmap_source(path, s2.crs, transform, resampling, wavelengths)
            if isinstance(source, EnmapSource) and self.inputs.enmap_bands:
                source.close()
                raise RegionError(
                    f"{path}: an EnMAP product's bands are picked by centre wavelength; --enmap-bands picks bands "
                    "of a plain GeoTIFF by index: leave it out"
                )
        else:
            source = GridSource(path, s2.crs, transform, resampling)
        self._sources[role] = source
        left, bottom, right, top = source.bounds_in(s2.crs)
        if left >= s2.bounds.right or right <= s2.bounds.left or bottom >= s2.bounds.top or top <= s2.bounds.bottom:
            raise RegionError(
                f"{path}: does not overlap {self.inputs.s2[0]} (its bounds in {s2.crs}: "
                f"{left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f}; the S2 grid's: {', '.join(f'{v:.0f}' for v in s2.bounds)})"
            )

    def _enmap_indexes(self, wanted: int) -> list[int]:
        count, bands = self._sources["enmap"].count, self.inputs.enmap_bands
        if not bands:
            if count != wanted:
                raise RegionError(
                    f"{self.inputs.enmap}: {count} bands; the model reads {wanted}: pick them with --enmap-bands (1-based, e.g. 1-{wanted})"
                )
            return list(range(1, count + 1))
        if len(bands) != wanted or max(bands) > count:
            raise RegionError(
                f"{self.inputs.enmap}: --enmap-bands picks {len(bands)} bands up to {max(bands)} of {count}; the model reads {wanted}"
            )
        return list(bands)

    @property
    def shape(self) -> tuple[int, int]:
        """Map (height, width) in S2 pixels."""
        return self._s2[0].height, self._s2[0].width

    def profile(self) -> dict:
        """CRS and transform of the S2 grid (the map's grid)."""
        handle = self._s2[0]
        return {"crs": handle.crs, "transform": handle.transform, "height": handle.height, "width": handle.width}

    def _read_s2(self, window: Window) -> np.ma.MaskedArray:
        if not self.inputs.s2_months:
            raw = read_window(self._s2[0], window, list(range(1, self.months * self.s2_bands + 1)))
            return raw.reshape(self.months, self.s2_bands, window.height, window.width)
        by_month = dict(zip(self._months, self._s2))
        bands = list(range(1, self.s2_bands + 1))
        return np.ma.stack([read_window(by_month[month], window, bands) for month in range(1, self.months + 1)])

    def read_raw(self, row: int, col: int, height: int, width: int | None = None) -> dict[str, np.ma.MaskedArray]:
        """The inputs under the window at (``row``, ``col``) of ``height`` × ``width`` pixels (square by default;
        multiples of the EnMAP factor) as stored, no data masked: ``s2`` (T, bands, h, w), ``enmap`` (bands, h/f,
        w/f) and ``prior`` (4, h, w) for the modalities read. ``h2crop prepare`` cuts samples from these;
        :meth:`read` normalises them for a model."""
        width = height if width is None else width
        window = Window(col, row, width, height)
        raw = {"s2": self._read_s2(window)}
        if "enmap" in self.modalities:
            f = self.factor
            raw["enmap"] = self._sources["enmap"].read(
                Window(col // f, row // f, width // f, height // f), self.enmap_indexes
            )
        if "prior" in self.modalities:
            raw["prior"] = self._sources["prior"].read(window, list(range(1, PRIOR_LEVELS + 1)))
        return raw

    def read(self, tile: Tile) -> Sample:
        """The model's inputs under ``tile``: ``s2`` (T, bands, n, n), ``enmap`` (bands, n/f, n/f), ``prior``
        (4, n, n) and ``valid`` (n, n): pixels with S2 data (any month, any band) and, for a model that reads
        EnMAP, EnMAP data. Missing values are set to the band mean (z-score 0), unlabelled priors to 255."""
        raw = self.read_raw(tile.row, tile.col, tile.size)
        nodata = np.ma.getmaskarray(raw["s2"])
        sample: Sample = {"s2": np.ma.filled(raw["s2"], 0), "name": f"tile{tile.index:06d}"}
        valid = ~nodata.all(axis=(0, 1))
        if "enmap" in self.modalities:
            enmap_nodata = np.ma.getmaskarray(raw["enmap"])
            sample["enmap"] = np.ma.filled(raw["enmap"], 0)
            valid &= np.repeat(np.repeat(~enmap_nodata.all(axis=0), self.factor, 0), self.factor, 1)
        if "prior" in self.modalities:
            sample["prior"] = np.ma.filled(raw["prior"], UNLABELLED).astype(np.uint8)
        sample = self.stats.normalise(sample)
        sample["s2"][nodata] = 0.0  # z-score 0 = the band mean: missing data pulls the model nowhere
        if "enmap" in self.modalities:
            sample["enmap"][enmap_nodata] = 0.0
        sample["valid"] = valid
        return sample

    def close(self) -> None:
        for handle in self._s2:
            handle.close()
        for source in self._sources.values():
            source.close()
        self._s2, self._sources = [], {}
