"""Read model tiles from the user's rasters: the same sample dict the ``.h5`` reader gives.

The S2 grid is the map's grid. EnMAP and the prior are read through a :class:`GridSource` on that grid
(coarsened by the EnMAP factor for EnMAP): a plain windowed read where the raster already lies on it (same
CRS and pixel size, whole-pixel offset), else GDAL's warper on the window asked for, so no input is ever
held whole in memory. Every check runs when the reader is built, before any work.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NodataShadowWarning
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.schema import Sample, window_months
from h2crop_core.mapping.region import RegionError
from h2crop_core.mapping.sources import MapInputs
from h2crop_core.mapping.tiling import Tile
from h2crop_core.taxonomy import UNLABELLED

PRIOR_LEVELS = 4


def read_window(handle: rasterio.io.DatasetReaderBase, window: Window, indexes: list[int]) -> np.ma.MaskedArray:
    """``handle.read(indexes, window, masked=True)`` for a window that may run off the raster: the part off
    it is masked (rasterio would clip the window and return a smaller array)."""
    rows = (max(0, window.row_off), min(handle.height, window.row_off + window.height))
    cols = (max(0, window.col_off), min(handle.width, window.col_off + window.width))
    out = np.ma.masked_all((len(indexes), window.height, window.width), dtype=handle.dtypes[indexes[0] - 1])
    if rows[1] > rows[0] and cols[1] > cols[0]:
        inside = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        with (
            warnings.catch_warnings()
        ):  # a 4-band uint8 prior may look RGBA to GDAL: its nodata, not "alpha", is the mask
            warnings.simplefilter("ignore", NodataShadowWarning)
            part = handle.read(indexes=indexes, window=inside, masked=True)
        out[
            :, rows[0] - window.row_off : rows[1] - window.row_off, cols[0] - window.col_off : cols[1] - window.col_off
        ] = part
    return out


def _fill_value(dtype: str) -> float | int:
    """A nodata value for a warped raster whose source has none (what lies outside the scene): NaN for
    floats, the most negative value for signed integers, the largest for unsigned ones."""
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.floating):
        return float("nan")
    return int(np.iinfo(kind).min if kind.kind == "i" else np.iinfo(kind).max)


class GridSource:
    """One raster read on a target grid (``crs``, ``transform``): windows of the target grid in, masked
    arrays out.

    A raster on the grid (same CRS and pixel size, whole-pixel offset) is read directly. Any other is warped
    window by window: the source window under the target window (plus a margin for the resampling kernel)
    is read in one multi-band call and reprojected by GDAL's warper into the target window. A ``WarpedVRT``
    would do the same through GDAL's block cache, but its blocks are strips of the whole scene's width and
    every band: with a capped cache and a compressed pixel-interleaved scene (EnMAP's 218 bands) it re-reads
    the same source blocks band by band, and a tile took 100 s instead of 0.05 s here.
    """

    def __init__(self, path: str, crs, transform: Affine, resampling: str) -> None:
        self.path, self.crs, self.transform = path, crs, transform
        self.source = rasterio.open(path)
        if self.source.crs is None:
            self.source.close()
            raise RegionError(f"{path}: has no CRS; it must be georeferenced to be placed on the S2 grid")
        self.offset = self._aligned_offset(crs, transform)
        self.resampling = Resampling[resampling]
        self.nodata = self.source.nodata if self.source.nodata is not None else _fill_value(self.source.dtypes[0])

    def _aligned_offset(self, crs, transform: Affine) -> tuple[int, int] | None:
        """Where the target grid's origin falls on the raster, in whole pixels, if the raster lies on the
        target grid (same CRS and pixel size, whole-pixel shift); else None."""
        own = self.source.transform
        if self.source.crs != crs or not (
            math.isclose(own.a, transform.a)
            and math.isclose(own.e, transform.e)
            and own.b == own.d == transform.b == transform.d == 0
        ):
            return None
        col, row = ~own @ (transform.c, transform.f)
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        return round(col), round(row)

    @property
    def count(self) -> int:
        return self.source.count

    @property
    def warped(self) -> bool:
        return self.offset is None

    def read(self, window: Window, indexes: list[int]) -> np.ma.MaskedArray:
        if not self.warped:
            col, row = self.offset
            return read_window(
                self.source, Window(window.col_off + col, window.row_off + row, window.width, window.height), indexes
            )
        return self._read_warped(window, indexes)

    def _read_warped(self, window: Window, indexes: list[int], pad: int = 3) -> np.ma.MaskedArray:
        src = self.source
        bounds = transform_bounds(self.crs, src.crs, *window_bounds(window, self.transform), densify_pts=21)
        under = src.window(*bounds)
        col0, row0 = math.floor(under.col_off) - pad, math.floor(under.row_off) - pad
        col1, row1 = math.ceil(under.col_off + under.width) + pad, math.ceil(under.row_off + under.height) + pad
        source_window = Window(col0, row0, col1 - col0, row1 - row0)
        data = read_window(src, source_window, indexes)
        out = np.full((len(indexes), window.height, window.width), self.nodata, dtype=data.dtype)
        reproject(
            np.ma.filled(data, self.nodata),
            out,
            src_transform=src.window_transform(source_window),
            src_crs=src.crs,
            src_nodata=self.nodata,
            dst_transform=window_transform(window, self.transform),
            dst_crs=self.crs,
            dst_nodata=self.nodata,
            resampling=self.resampling,
        )
        return np.ma.masked_invalid(out) if np.isnan(self.nodata) else np.ma.masked_equal(out, self.nodata)

    def close(self) -> None:
        self.source.close()


class RegionReader:
    """Reads tiles of one set of inputs for one model.

    Args:
        inputs: the rasters (:class:`~h2crop_core.mapping.sources.MapInputs`).
        window: the model's temporal window (its first T months are read).
        modalities: the model's inputs (``s2``, ``enmap``, ``prior``).
        stats: normalisation of the training data; S2 and EnMAP come back as float32 z-scores.
        s2_bands, enmap_bands, factor: what the model expects.
        resampling: how EnMAP is warped where it does not lie on the grid (the prior: always nearest).

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
    ) -> None:
        self.inputs, self.modalities, self.stats = inputs, modalities, stats
        self.months, self.factor, self.s2_bands = window_months(window), factor, s2_bands
        self._s2: list[rasterio.DatasetReader] = []
        self._sources: dict[str, GridSource] = {}
        try:
            self._open_s2()
            first = self._s2[0]
            if first.crs is None:
                raise RegionError(f"{inputs.s2[0]}: has no CRS; the S2 grid is the map's and must be georeferenced")
            if "enmap" in modalities:
                self._open("enmap", inputs.enmap, first.transform @ Affine.scale(factor), resampling)
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

    def _open(self, role: str, path: str | None, transform: Affine, resampling: str) -> None:
        if path is None:
            raise RegionError(f"the model reads {role}; give it with --{role}")
        s2 = self._s2[0]
        source = GridSource(path, s2.crs, transform, resampling)
        self._sources[role] = source
        left, bottom, right, top = transform_bounds(source.source.crs, s2.crs, *source.source.bounds)
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

    def read(self, tile: Tile) -> Sample:
        """The model's inputs under ``tile``: ``s2`` (T, bands, n, n), ``enmap`` (bands, n/f, n/f), ``prior``
        (4, n, n) and ``valid`` (n, n): pixels with S2 data (any month, any band) and, for a model that reads
        EnMAP, EnMAP data. Missing values are set to the band mean (z-score 0), unlabelled priors to 255."""
        window = Window(tile.col, tile.row, tile.size, tile.size)
        raw = self._read_s2(window)
        nodata = np.ma.getmaskarray(raw)
        sample: Sample = {"s2": np.ma.filled(raw, 0), "name": f"tile{tile.index:06d}"}
        valid = ~nodata.all(axis=(0, 1))
        if "enmap" in self.modalities:
            side = tile.size // self.factor
            enmap = self._sources["enmap"].read(
                Window(tile.col // self.factor, tile.row // self.factor, side, side), self.enmap_indexes
            )
            enmap_nodata = np.ma.getmaskarray(enmap)
            sample["enmap"] = np.ma.filled(enmap, 0)
            valid &= np.repeat(np.repeat(~enmap_nodata.all(axis=0), self.factor, 0), self.factor, 1)
        if "prior" in self.modalities:
            sample["prior"] = np.ma.filled(
                self._sources["prior"].read(window, list(range(1, PRIOR_LEVELS + 1))), UNLABELLED
            ).astype(np.uint8)
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
