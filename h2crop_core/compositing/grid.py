"""The grid composites are made on, and its blocks: ``--like RASTER`` (that raster's grid) or ``--bounds`` in
a CRS at a resolution (snapped outwards to whole pixels)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError


@dataclass(frozen=True)
class Block:
    """A window of the target grid: the unit of work, of resuming and of memory."""

    index: int
    row: int
    col: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)


@dataclass(frozen=True)
class TargetGrid:
    """A north-up grid: ``crs`` (as given, e.g. ``EPSG:32631``), ``transform``, ``width`` x ``height`` pixels."""

    crs: str
    transform: Affine
    width: int
    height: int

    @classmethod
    def like(cls, path: str | Path) -> TargetGrid:
        """The grid of an existing raster (a month of earlier composites, a label raster, a region's s2.tif)."""
        import rasterio

        path = Path(path).expanduser()
        if not path.is_file():
            raise RegionError(f"{path}: no such file (--like takes a raster whose grid the composites take)")
        with rasterio.open(path) as handle:
            if handle.crs is None:
                raise RegionError(f"{path}: has no CRS; --like needs a georeferenced raster")
            return cls(handle.crs.to_string(), handle.transform, handle.width, handle.height)

    @classmethod
    def from_bounds(cls, bounds: tuple[float, float, float, float], crs: str, resolution: float = 10.0) -> TargetGrid:
        """The grid covering ``bounds`` (west, south, east, north in ``crs``) at ``resolution``, its corner on a
        multiple of the resolution (so neighbouring regions share a grid)."""
        try:
            parsed = CRS.from_user_input(crs)
        except (CRSError, ValueError):
            raise SettingError(f"--crs {crs!r}: not a CRS (give e.g. EPSG:32631)") from None
        if parsed.is_geographic:
            raise SettingError(f"--crs {crs}: geographic (degrees); composites need a projected CRS such as UTM")
        west, south, east, north = bounds
        if not (east > west and north > south) or resolution <= 0:
            raise SettingError(
                f"--bounds {bounds}: expected west < east and south < north, and a positive --resolution"
            )
        west, north = math.floor(west / resolution) * resolution, math.ceil(north / resolution) * resolution
        width = math.ceil((east - west) / resolution - 1e-9)
        height = math.ceil((north - south) / resolution - 1e-9)
        return cls(crs, Affine(resolution, 0.0, west, 0.0, -resolution, north), width, height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        west, north = self.transform.c, self.transform.f
        return west, north + self.transform.e * self.height, west + self.transform.a * self.width, north

    def blocks(self, size: int) -> list[Block]:
        """The grid cut into ``size`` x ``size`` blocks (smaller at the right and bottom edges), row-major."""
        starts = [(row, col) for row in range(0, self.height, size) for col in range(0, self.width, size)]
        return [
            Block(i, row, col, min(size, self.height - row), min(size, self.width - col))
            for i, (row, col) in enumerate(starts)
        ]

    def block_bounds(self, block: Block, crs: str | None = None) -> tuple[float, float, float, float]:
        """A block's (west, south, east, north), in the grid's CRS or transformed into ``crs``."""
        west, north = self.transform @ (block.col, block.row)
        east, south = self.transform @ (block.col + block.width, block.row + block.height)
        if crs is None or CRS.from_user_input(crs) == CRS.from_user_input(self.crs):
            return west, south, east, north
        return transform_bounds(self.crs, crs, west, south, east, north, densify_pts=21)

    def to_dict(self) -> dict:
        return {"crs": self.crs, "transform": list(self.transform)[:6], "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, data: dict) -> TargetGrid:
        return cls(data["crs"], Affine(*data["transform"]), data["width"], data["height"])
