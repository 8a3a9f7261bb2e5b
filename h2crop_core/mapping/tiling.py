"""Tiling geometry: overlapping model tiles over a region, and which pixels each tile owns.

A tile is a square window of the S2 grid the model runs on. Neighbouring tiles overlap by at least
``2 × margin`` pixels and each pixel is owned by exactly one tile: the one whose centre is nearest along
each axis (the overlap is split at its middle). Predictions near a tile's edge see less context (the
convolutions zero-pad there), so only the owned core of each tile goes into the map; there is no blending,
so every output pixel is one model decision and tiles can be written and resumed independently.

Tile corners are multiples of the EnMAP factor (3), so every tile has a whole EnMAP window under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from h2crop_core.errors import SettingError

#: S2 tile sides must be multiples of 32 (the Swin's patching and merges).
S2_TILE_MULTIPLE = 32


@dataclass(frozen=True)
class Tile:
    """One model tile: its window on the region grid and the part of it the tile owns.

    Attributes:
        index: position in :meth:`TileGrid.tiles` (row-major).
        row, col: upper-left corner on the S2 grid of the region.
        size: side in S2 pixels.
        core: (row0, row1, col0, col1) region pixels this tile owns, half-open.
    """

    index: int
    row: int
    col: int
    size: int
    core: tuple[int, int, int, int]

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        """The owned core as slices of the tile's own (size, size) array."""
        row0, row1, col0, col1 = self.core
        return slice(row0 - self.row, row1 - self.row), slice(col0 - self.col, col1 - self.col)


def axis_starts(length: int, tile: int, stride: int, factor: int = 1) -> list[int]:
    """Tile starts along one axis: every ``stride`` pixels, plus a last tile flush with the far edge (the
    edge rounded up to whole ``factor`` pixels, and to one tile: tiles may run off a raster by less than
    that; what lies off it is read as no data and owned by no tile)."""
    padded = max(tile, -(-length // factor) * factor)
    starts = list(range(0, padded - tile + 1, stride))
    if starts[-1] != padded - tile:
        starts.append(padded - tile)
    return starts


def axis_cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Owned interval of each tile along one axis: overlaps are split at their middle; none runs past
    ``length``."""
    bounds = (
        [0] + [min(length, (previous + tile + start) // 2) for previous, start in zip(starts, starts[1:])] + [length]
    )
    return list(zip(bounds, bounds[1:]))


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a ``height`` × ``width`` region (S2 pixels).

    Args:
        height, width: region size in S2 pixels (any: the last tiles may run off the far edges).
        tile: model tile side (a multiple of 32 and of ``factor``; 192 is the benchmark's).
        margin: pixels at each tile edge left to the neighbour where there is one; the overlap of
            neighbours is at least twice this.
        factor: S2 pixels per EnMAP pixel side.
    """

    height: int
    width: int
    tile: int = 192
    margin: int = 16
    factor: int = 3

    def __post_init__(self) -> None:
        multiple = S2_TILE_MULTIPLE * self.factor // gcd(S2_TILE_MULTIPLE, self.factor)
        if self.tile <= 0 or self.tile % multiple:
            raise SettingError(
                f"tile side must be a positive multiple of {multiple} (32 for the S2 stream, {self.factor} for EnMAP), got {self.tile}"
            )
        if self.height < 1 or self.width < 1:
            raise SettingError(f"region {self.height}×{self.width} has no pixels")
        if not 0 <= 2 * self.margin < self.tile - self.factor:
            raise SettingError(
                f"an overlap of {2 * self.margin} px (margin {self.margin} a side) leaves no core in a {self.tile}-pixel tile"
            )

    @property
    def stride(self) -> int:
        """Distance between tile starts: the tile less both margins, rounded down to whole EnMAP pixels."""
        return (self.tile - 2 * self.margin) // self.factor * self.factor

    def tiles(self) -> list[Tile]:
        """Every tile, row-major; their cores partition the region."""
        rows = axis_starts(self.height, self.tile, self.stride, self.factor)
        cols = axis_starts(self.width, self.tile, self.stride, self.factor)
        row_cores, col_cores = axis_cores(rows, self.tile, self.height), axis_cores(cols, self.tile, self.width)
        tiles = []
        for row, (row0, row1) in zip(rows, row_cores):
            for col, (col0, col1) in zip(cols, col_cores):
                tiles.append(Tile(len(tiles), row, col, self.tile, (row0, row1, col0, col1)))
        return tiles

    def to_dict(self) -> dict[str, int]:
        return {
            "height": self.height,
            "width": self.width,
            "tile": self.tile,
            "margin": self.margin,
            "factor": self.factor,
        }
