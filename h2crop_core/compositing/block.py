"""One block of the target grid, one month: every scene covering it read for that window only, warped onto
the grid, masked by its scene classification, harmonised, and composited.

* Reading: each band through GDAL's warper onto the target grid (:func:`warped_on`; a copy where a scene lies
  on the grid, a warp for 20 m bands and other UTM zones), bilinear for reflectance, nearest for ``SCL``; DN 0
  is no data and never enters the resampling.
* Masking: a pixel is clear where ``SCL`` holds none of the dropped classes (default as sits: 0 no data,
  1 defective, 2 dark/topographic shadow, 3 cloud shadow, 8-9 cloud, 10 cirrus) and lies more than ``dilate``
  pixels from a dropped class other than no data: bilinear reflectance mixes the neighbours of a cloud's edge,
  and SCL's own edges are loose (openEO dilates its SCL mask for the same reason).
* Harmonising: :func:`~h2crop_core.products.harmonise.to_convention` with each scene's own offsets.
* Compositing (``method``): ``median`` of the clear observations per band (default), ``mean``, or
  ``least-cloudy``: each pixel from the clear scene with the least cloud over the block (a best-available-pixel
  composite; the bands of a pixel then come from one date, at the cost of one date's noise).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from h2crop_core.compositing.grid import Block, TargetGrid
from h2crop_core.compositing.options import CompositeOptions
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.harmonise import NODATA, to_convention, to_int16
from h2crop_core.products.sentinel2 import MODEL_BANDS, Scene

#: open rasters an actor keeps (a year of scenes holds thousands of files; blocks go month by month)
MAX_OPEN = 256


def overlaps(scene: Scene, grid: TargetGrid, block: Block) -> bool:
    """Whether the scene's footprint meets the block (compared in the scene's CRS)."""
    west, south, east, north = grid.block_bounds(block, scene.crs)
    s_west, s_south, s_east, s_north = scene.bounds
    return west < s_east and east > s_west and south < s_north and north > s_south


def warped_on(path: str, grid: TargetGrid, resampling: str) -> WarpedVRT:
    """A scene's band as GDAL's warper sees it on the whole target grid (nothing is read until a window is):
    DN 0 is no data, never resampled into a valid pixel, and what lies off the scene reads as 0.

    One warper per file and grid, made once per actor: warping window arrays with ``rasterio.warp.reproject``
    instead costs a GDAL environment per call, and where boto3 and AWS credentials are present (cloud machines,
    this project's test session) each of those builds a boto3 session: 20 times slower here."""
    source = rasterio.open(path)
    if source.crs is None:
        source.close()
        raise RegionError(f"{path}: has no CRS; a scene must be georeferenced to be placed on the target grid")
    # the resampling kernel's scale, fixed (source pixel size / target pixel size: 2 for 20 m bands on a 10 m
    # grid, 1 for another UTM zone's 10 m): left to GDAL, it follows each window's extent, and a rotated
    # scene (another zone) would come out slightly differently blurred in blocks of another size
    scale = source.res[0] / abs(grid.transform.a) if source.crs.is_projected else None
    vrt = WarpedVRT(
        source,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling[resampling],
        src_nodata=0,
        nodata=0,
        **({"XSCALE": f"{scale:.6g}", "YSCALE": f"{scale:.6g}"} if scale else {}),
    )
    vrt.close = _closing(vrt.close, source)  # the VRT owns its source
    return vrt


def _closing(close, source):
    def both() -> None:
        close()
        source.close()

    return both


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a square structuring element)."""
    if pixels <= 0 or not mask.any():
        return mask
    height, width = mask.shape
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def nan_median(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=0)`` for a few observations, the same values 3-6x faster (numpy takes its
    masked-array route below 600 observations: a quarter to a half of a block's time). ``values`` (S, bands, h, w), NaN
    where not observed, is sorted in place (NaN last); ``count`` (h, w) is the observations per pixel. The
    median is the mean of the two middle values (the middle one twice), as float32 ``(a + b) / 2`` like numpy's;
    NaN where there is none."""
    values.sort(axis=0)
    middle = (np.maximum(count - 1, 0) // 2)[None, None]
    low = np.take_along_axis(values, middle, axis=0)[0]
    high = np.take_along_axis(values, (count // 2)[None, None], axis=0)[0]
    median = (low + high) / np.float32(2)
    median[:, count == 0] = np.nan
    return median


class Compositor:
    """Composites blocks of one grid from a set of scenes, keeping recently used files open across blocks.

    Args:
        scenes: every scene of the year (each block and month picks those covering it).
        grid: the target grid.
        months: the months (1-12) to composite, in output order.
        options: method, dropped SCL classes, dilation.
    """

    def __init__(self, scenes: list[Scene], grid: TargetGrid, months: tuple[int, ...], options: CompositeOptions):
        self.grid, self.months, self.options = grid, months, options
        self.by_month = {
            month: sorted((s for s in scenes if s.month == month), key=lambda s: s.time) for month in months
        }
        self._open: OrderedDict[tuple[str, str], WarpedVRT] = OrderedDict()

    def _source(self, path: str, resampling: str) -> WarpedVRT:
        key = (path, resampling)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        if len(self._open) >= MAX_OPEN:
            self._open.popitem(last=False)[1].close()
        self._open[key] = warped_on(path, self.grid, resampling)
        return self._open[key]

    def _read(self, path: str, block: Block, resampling: str) -> np.ndarray:
        return self._source(path, resampling).read(1, window=block.window)

    def _clear(self, scene: Scene, block: Block) -> np.ndarray:
        """(h, w) bool: where the scene has data and its SCL keeps the pixel. SCL is read with a halo of the
        dilation's width (within the grid), so a cloud just across a block's edge is dilated into it as it
        would be in a block of any other size."""
        halo = self.options.dilate
        row0, col0 = max(0, block.row - halo), max(0, block.col - halo)
        row1 = min(self.grid.height, block.row + block.height + halo)
        col1 = min(self.grid.width, block.col + block.width + halo)
        wide = Block(block.index, row0, col0, row1 - row0, col1 - col0)
        scl = self._read(scene.scl, wide, "nearest")
        dropped = np.isin(scl, self.options.drop)
        clear = (scl != 0) & ~dropped & ~dilate(dropped & (scl != 0), halo)
        top, left = block.row - row0, block.col - col0
        return clear[top : top + block.height, left : left + block.width]

    def month(self, month: int, block: Block) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The month's composite of the block: ((10, h, w) int16 with NODATA where no clear observation, (h, w)
        uint8 count of clear observations, the ids of the scenes that covered the block)."""
        scenes = [s for s in self.by_month.get(month, []) if overlaps(s, self.grid, block)]
        shape = (block.height, block.width)
        if not scenes:
            return np.full((len(MODEL_BANDS), *shape), NODATA, np.int16), np.zeros(shape, np.uint8), []
        values = np.full((len(scenes), len(MODEL_BANDS), *shape), np.nan, np.float32)
        for i, scene in enumerate(scenes):
            clear = self._clear(scene, block)
            if not clear.any():
                continue
            for b, band in enumerate(MODEL_BANDS):
                band_values = to_convention(
                    self._read(scene.bands[band], block, "bilinear"), scene.offsets[band], scene.quantification
                )
                band_values[~clear] = np.nan
                values[i, b] = band_values
        observed = ~np.isnan(values).any(axis=1)  # (S, h, w): clear, with data in every band
        values[~np.broadcast_to(observed[:, None], values.shape)] = np.nan
        return to_int16(self._reduce(values, observed)), observed.sum(axis=0).astype(np.uint8), [s.id for s in scenes]

    def _reduce(self, values: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """(S, bands, h, w) observations (NaN where none; the median sorts them in place) -> (bands, h, w)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no clear observation, NaN out
            if self.options.method == "median":
                return nan_median(values, observed.sum(axis=0))
            if self.options.method == "mean":
                return np.nanmean(values, axis=0)
        # least-cloudy: scenes ordered by their clear share of the block, most clear first (ties: earliest)
        order = np.argsort(-observed.reshape(len(observed), -1).mean(axis=1), kind="stable")
        out = np.full(values.shape[1:], np.nan, np.float32)
        for i in order:
            take = np.isnan(out[0]) & observed[i]
            out[:, take] = values[i][:, take]
        return out

    def block(self, block: Block) -> dict:
        """Every month of a block: ``data`` (months, 10, h, w) int16, ``count`` (months, h, w) uint8 and
        ``scenes`` (per month, the ids of the scenes that covered it)."""
        results = [self.month(month, block) for month in self.months]
        return {
            "data": np.stack([r[0] for r in results]),
            "count": np.stack([r[1] for r in results]),
            "scenes": [r[2] for r in results],
        }

    def close(self) -> None:
        for source in self._open.values():
            source.close()
        self._open.clear()
