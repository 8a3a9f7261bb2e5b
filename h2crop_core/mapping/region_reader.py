"""Read model tiles from a region's GeoTIFFs: the same sample dict the ``.h5`` reader gives.

A region is a folder with ``region.json`` (written last, so its absence means an incomplete region) naming
``s2.tif`` (month-major bands: band = month × s2_bands + band, 10 m), ``enmap.tif`` (30 m, same extent) and
``prior.tif`` (4 levels, 255 = unlabelled); ``h2crop synth --region`` writes one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from h2crop_core.errors import H2CropError
from h2crop_core.data.region import MANIFEST
from h2crop_core.data.schema import Sample, window_months
from h2crop_core.data.normalise import NormStats
from h2crop_core.mapping.tiling import Tile


class RegionError(H2CropError):
    """A region folder that cannot be mapped; the message names the file and what was expected."""


def read_manifest(region_dir: str | Path) -> dict:
    """``region.json`` of a complete region, with the raster files checked to exist."""
    folder = Path(region_dir)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise RegionError(f"{manifest_path}: missing; a region folder needs it (written last, so a region without it is incomplete)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise RegionError(f"{manifest_path}: not valid JSON ({error})") from None
    for key in ("files", "size", "months", "s2_bands", "enmap_bands", "enmap_factor"):
        if key not in manifest:
            raise RegionError(f"{manifest_path}: key {key!r} missing; found {sorted(manifest)}")
    for key, name in manifest["files"].items():
        if not (folder / name).is_file():
            raise RegionError(f"{folder / name}: the {key} raster named in {manifest_path} does not exist")
    return manifest


class RegionReader:
    """Reads tiles of one region for one model.

    Args:
        region_dir: the region folder.
        window: the model's temporal window (its first T months are read).
        modalities: the model's inputs (``s2``, ``enmap``, ``prior``).
        stats: normalisation of the training data; S2 and EnMAP come back as float32 z-scores.
        s2_bands, enmap_bands, factor: what the model expects; a region that differs is an error.

    The rasters are checked to line up when the reader is built; their handles stay open until :meth:`close`.
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
        where = self.folder / MANIFEST
        expected = {"months": (self.months, "at least"), "s2_bands": (s2_bands, "exactly"), "enmap_bands": (enmap_bands, "exactly"), "enmap_factor": (factor, "exactly")}
        for key, (value, how) in expected.items():
            if "enmap" in key and "enmap" not in modalities:
                continue
            found = self.manifest[key]
            if (how == "at least" and found < value) or (how == "exactly" and found != value):
                raise RegionError(f"{where}: {key} is {found}; the model needs {how} {value}")
        missing = [m for m in modalities if m not in self.manifest["files"]]
        if missing:
            raise RegionError(f"{where}: the model reads {list(modalities)}; the region has no {missing} raster")
        self.s2_bands = s2_bands
        self.enmap_bands = enmap_bands
        self._handles: dict[str, rasterio.DatasetReader] = {}
        self.check_geometry()

    def check_geometry(self) -> None:
        """The rasters must line up: the same CRS, S2 and prior on one grid, EnMAP on it coarsened by the
        factor, and enough bands. rasterio clips windows that run off a raster, so a misfit raster would
        otherwise give short reads or a silently misregistered map."""
        s2 = self._open("s2")
        where = lambda key: self.folder / self.manifest["files"][key]  # noqa: E731
        if s2.count < self.months * self.s2_bands:
            raise RegionError(f"{where('s2')}: {s2.count} bands; the model needs {self.months} months × {self.s2_bands} bands (month-major)")
        coarse = s2.transform @ Affine.scale(self.factor)
        expected = {
            "prior": (s2.transform, (s2.height, s2.width), 4),
            "enmap": (coarse, (s2.height // self.factor, s2.width // self.factor), self.enmap_bands),
        }
        if s2.height % self.factor or s2.width % self.factor:
            raise RegionError(f"{where('s2')}: {s2.height}×{s2.width} pixels is not a whole number of {self.factor}-pixel EnMAP cells")
        for key in ("prior", "enmap"):
            if key not in self.modalities:
                continue
            transform, shape, bands = expected[key]
            handle = self._open(key)
            found = {"CRS": handle.crs, "transform": handle.transform, "shape": (handle.height, handle.width), "bands": handle.count}
            wanted = {"CRS": s2.crs, "transform": transform, "shape": shape, "bands": bands}
            bad = [k for k in wanted if (found[k] != wanted[k] if k != "transform" else not found[k].almost_equals(wanted[k]))]
            if bad:
                raise RegionError(
                    f"{where(key)}: does not line up with {where('s2')}: " + "; ".join(f"{k} {found[k]}, expected {wanted[k]}" for k in bad)
                )

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
