"""Where samples are cut: a grid of tiles over the S2 grid, grouped into square spatial blocks of whole tiles.

Tiles do not overlap (a pixel belongs to one sample, so one split). Blocks are whole tiles (a tile never
straddles two blocks, so a block's split is its tiles' split); a block's side is ``--block`` km rounded to
whole tiles. Blocks are also the unit of work: one Ray task cuts one block's tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine

from h2crop_core.errors import SettingError

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class PrepTile:
    """One sample's window: its top-left pixel on the S2 grid, its block and its name."""

    row: int
    col: int
    block: int
    name: str


@dataclass(frozen=True)
class Layout:
    """Tiles and blocks over an S2 grid.

    Attributes:
        transform, crs, height, width: the S2 grid (the composites').
        tile: tile side in S2 pixels (192: the benchmark's), a multiple of the EnMAP factor.
        block_tiles: block side in tiles.
        prefix: sample names are ``<prefix>_x<col>_y<row>`` (pixel offsets, as the benchmark's names).
    """

    transform: Affine
    crs: str
    height: int
    width: int
    tile: int
    block_tiles: int
    prefix: str = "tile"

    @classmethod
    def create(
        cls, transform: Affine, crs: str, height: int, width: int, tile: int, block_km: float, factor: int = 3
    ) -> Layout:
        """A layout whose blocks are ``block_km`` rounded to whole tiles (at least one).

        Raises:
            SettingError: a tile that is not a multiple of ``factor``, or a block that is not positive.
        """
        if tile <= 0 or tile % factor:
            raise SettingError(f"tile must be a positive multiple of {factor} (the EnMAP factor); got {tile}")
        if block_km <= 0:
            raise SettingError(f"block must be a positive size in km; got {block_km}")
        tile_m = tile * abs(transform.a)
        block_tiles = max(1, round(block_km * 1000 / tile_m))
        return cls(transform, crs, height, width, tile, block_tiles)

    @property
    def tile_rows(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def tile_cols(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def block_cols(self) -> int:
        return math.ceil(self.tile_cols / self.block_tiles)

    @property
    def block_km(self) -> float:
        return self.block_tiles * self.tile * abs(self.transform.a) / 1000

    def tiles(self) -> list[PrepTile]:
        """Every tile, row-major; edge tiles run off the raster (their off part is no data)."""
        found = []
        for i in range(self.tile_rows):
            for j in range(self.tile_cols):
                row, col = i * self.tile, j * self.tile
                block = (i // self.block_tiles) * self.block_cols + j // self.block_tiles
                found.append(PrepTile(row, col, block, f"{self.prefix}_x{col:06d}_y{row:06d}"))
        return found

    def window_bounds(self, row: int, col: int, height: int, width: int) -> Bounds:
        """(west, south, east, north) of a pixel window in the grid's CRS."""
        west, north = self.transform @ (col, row)
        east, south = self.transform @ (col + width, row + height)
        return min(west, east), min(south, north), max(west, east), max(south, north)

    def tile_bounds(self, tile: PrepTile) -> Bounds:
        return self.window_bounds(tile.row, tile.col, self.tile, self.tile)

    def block_bounds(self, block: int) -> Bounds:
        side = self.block_tiles * self.tile
        row, col = divmod(block, self.block_cols)
        return self.window_bounds(row * side, col * side, side, side)


def distance(a: Bounds, b: Bounds) -> float:
    """The shortest distance between two boxes (0 where they touch or overlap)."""
    dx = max(0.0, a[0] - b[2], b[0] - a[2])
    dy = max(0.0, a[1] - b[3], b[1] - a[3])
    return math.hypot(dx, dy)
