"""Parcels burnt onto a tile's pixels: the four-level label (or prior) stack of a window of the S2 grid.

A pixel takes the class of the parcel its *centre* lies in (GDAL's rasteriser without ``all_touched``, as
TorchGeo and eo-learn burn). Pixel centres claimed by two parcels (overlapping polygons, common in registers)
are unlabelled. ``erode`` drops the border pixels of each parcel, those with a pixel of anything else (another
parcel, outside every parcel) within ``erode`` pixels along rows, columns or diagonals: at 10 m they mix two
covers. The window is burnt with a margin of ``erode`` pixels, so a tile's edge erodes as the region's
interior does. Pixels outside every parcel are unlabelled by default (a register lists declared parcels, not
what lies between them) or background with ``outside="background"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

from h2crop_core.taxonomy import NUM_LEVELS, UNLABELLED, Taxonomy

OUTSIDE_CHOICES = ("unlabelled", "background")
#: the index of a pixel centre two parcels claim
OVERLAP = -1


@dataclass
class Parcels:
    """A register's polygons on the S2 grid's CRS and each one's level-4 class (255: unknown code).

    Attributes:
        geometries: a GeoSeries (its spatial index answers which parcels meet a window).
        leaf: (n,) uint8 level-4 id per parcel.
    """

    geometries: object
    leaf: np.ndarray

    def __len__(self) -> int:
        return len(self.leaf)

    def within(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """Indexes of the parcels whose bounding box meets ``bounds`` (west, south, east, north)."""
        import shapely

        return np.sort(self.geometries.sindex.query(shapely.box(*bounds)))


def parcel_index(parcels: Parcels, transform: Affine, row: int, col: int, height: int, width: int) -> np.ndarray:
    """(height, width) int32: per pixel, 1 + the index of the parcel its centre lies in, 0 outside every parcel,
    :data:`OVERLAP` where two parcels claim it. The window starts at (``row``, ``col``) of the grid ``transform``
    and may run off the raster (parcels are vectors)."""
    from rasterio.features import MergeAlg, rasterize

    window_transform = transform @ Affine.translation(col, row)
    west, north = window_transform @ (0, 0)
    east, south = window_transform @ (width, height)
    found = parcels.within((min(west, east), min(south, north), max(west, east), max(south, north)))
    if not len(found):
        return np.zeros((height, width), dtype=np.int32)
    geometries = parcels.geometries.values[found]
    shape = (height, width)
    index = rasterize(
        zip(geometries, (found + 1).tolist()), out_shape=shape, transform=window_transform, fill=0, dtype="int32"
    )
    claims = rasterize(
        ((g, 1) for g in geometries), out_shape=shape, transform=window_transform, fill=0, dtype="uint8",
        merge_alg=MergeAlg.add,
    )  # fmt: skip
    index[claims > 1] = OVERLAP
    return index


def border_pixels(index: np.ndarray, erode: int) -> np.ndarray:
    """Pixels with a pixel of another index within ``erode`` pixels (a (2·erode+1)² square): each parcel's
    border. The array's own edge counts as nothing else (burn a margin to erode there)."""
    if erode <= 0:
        return np.zeros(index.shape, dtype=bool)
    from scipy.ndimage import maximum_filter, minimum_filter

    size = 2 * erode + 1
    return maximum_filter(index, size=size, mode="nearest") != minimum_filter(index, size=size, mode="nearest")


def level_table(taxonomy: Taxonomy) -> np.ndarray:
    """(256, 4) uint8: a level-4 id's four levels; 0 -> all background, anything else unknown -> 255."""
    table = np.full((256, NUM_LEVELS), UNLABELLED, dtype=np.uint8)
    table[: len(taxonomy.paths)] = taxonomy.paths
    return table


def burn_labels(
    parcels: Parcels,
    taxonomy: Taxonomy,
    transform: Affine,
    row: int,
    col: int,
    size: int | tuple[int, int],
    *,
    erode: int = 0,
    outside: str = "unlabelled",
) -> np.ndarray:
    """The (4, height, width) uint8 stack of the window at (``row``, ``col``) of ``size`` (a side, or (height,
    width)) pixels: each pixel's parcel class at every level; unknown codes, overlaps and eroded borders 255;
    outside every parcel 255 or 0 (``outside``)."""
    if outside not in OUTSIDE_CHOICES:
        raise ValueError(f"outside must be one of {OUTSIDE_CHOICES}, got {outside!r}")
    height, width = (size, size) if isinstance(size, int) else size
    margin = max(erode, 0)
    index = parcel_index(parcels, transform, row - margin, col - margin, height + 2 * margin, width + 2 * margin)
    border = border_pixels(index, erode)
    inner = (slice(margin, margin + height), slice(margin, margin + width))
    index, border = index[inner], border[inner]
    leaf_of = np.concatenate([[0 if outside == "background" else UNLABELLED], parcels.leaf]).astype(np.uint8)
    leaf = leaf_of[np.clip(index, 0, None)]
    leaf[(index == OVERLAP) | (border & (index != 0))] = UNLABELLED
    return np.ascontiguousarray(np.moveaxis(level_table(taxonomy)[leaf], -1, 0))
