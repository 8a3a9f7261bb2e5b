"""Read model tiles from a region's GeoTIFFs: the same sample dict the ``.h5`` reader gives.

The folder layout and the rules the rasters must follow are :mod:`h2crop_core.mapping.region`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.schema import Sample, window_months
from h2crop_core.mapping.region import check_region, read_manifest
from h2crop_core.mapping.tiling import Tile


class RegionReader:
    """Reads tiles of one region for one model.

    Args:
        region_dir: the region folder.
        window: the model's temporal window (its first T months are read).
        modalities: the model's inputs (``s2``, ``enmap``, ``prior``).
        stats: normalisation of the training data; S2 and EnMAP come back as float32 z-scores.
        s2_bands, enmap_bands, factor: what the model expects; a region that differs is an error.

    The region is checked (:func:`~h2crop_core.mapping.region.check_region`) when the reader is built; the
    rasters' handles stay open until :meth:`close`.

    Raises:
        RegionError: the region is incomplete or does not hold what the model reads.
    """

    def __init__(
        self,
        region_dir: str | Path,
        window: str | int,
        modalities: tuple[str, ...],
        stats: NormStats,
        *,
        s2_bands: int,
        enmap_bands: int,
        factor: int,
    ) -> None:
        self.folder = Path(region_dir)
        self.manifest = read_manifest(self.folder)
        self.months = window_months(window)
        self.modalities = modalities
        self.stats = stats
        self.factor = factor
        self.s2_bands = s2_bands
        self.enmap_bands = enmap_bands
        self._handles: dict[str, rasterio.DatasetReader] = {}
        try:
            check_region(
                self.folder, self.manifest, self._open,
                months=self.months, modalities=modalities, s2_bands=s2_bands, enmap_bands=enmap_bands, factor=factor,
            )
        except BaseException:
            self.close()  # a refused region leaves no raster open
            raise

    @property
    def shape(self) -> tuple[int, int]:
        """Region (height, width) in S2 pixels."""
        handle = self._open("s2")
        return handle.height, handle.width

    def _open(self, key: str) -> rasterio.DatasetReader:
        if key not in self._handles:
            self._handles[key] = rasterio.open(self.folder / self.manifest["files"][key])
        return self._handles[key]

    def profile(self) -> dict:
        """CRS and transform of the S2 grid (the map's grid)."""
        handle = self._open("s2")
        return {"crs": handle.crs, "transform": handle.transform, "height": handle.height, "width": handle.width}

    def read(self, tile: Tile) -> Sample:
        """The model's inputs under ``tile``: ``s2`` (T, bands, n, n), ``enmap`` (bands, n/f, n/f), ``prior``
        (4, n, n) and ``valid`` (n, n): pixels with S2 data (nodata pixels are set to the band mean)."""
        window = Window(tile.col, tile.row, tile.size, tile.size)
        s2_handle = self._open("s2")
        raw = s2_handle.read(indexes=list(range(1, self.months * self.s2_bands + 1)), window=window, masked=True)
        s2 = np.ma.filled(raw, 0).reshape(self.months, self.s2_bands, tile.size, tile.size)
        nodata = np.ma.getmaskarray(raw).reshape(s2.shape)
        sample: Sample = {"s2": s2, "name": f"tile{tile.index:06d}"}
        if "enmap" in self.modalities:
            coarse = Window(tile.col // self.factor, tile.row // self.factor, tile.size // self.factor, tile.size // self.factor)
            enmap = self._open("enmap").read(window=coarse, masked=True)
            sample["enmap"] = np.ma.filled(enmap, 0)
            enmap_nodata = np.ma.getmaskarray(enmap)
        if "prior" in self.modalities:
            sample["prior"] = self._open("prior").read(window=window)
        sample = self.stats.normalise(sample)
        sample["s2"][nodata] = 0.0  # z-score 0 = the band mean: missing data pulls the model nowhere
        if "enmap" in self.modalities:
            sample["enmap"][enmap_nodata] = 0.0
        sample["valid"] = ~nodata.all(axis=(0, 1))
        return sample

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
