"""Ground area of map pixels, for the class areas of a map's summary and per-parcel statistics."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.crs import CRS

#: the authalic sphere's radius (metres): equal-area formulas on a sphere of the WGS84 ellipsoid's area
EARTH_RADIUS_M = 6_371_007.2


def row_areas_m2(crs: CRS | str, transform: Affine, height: int) -> np.ndarray:
    """Area (m²) of one pixel in each of ``height`` rows of a north-up grid.

    Projected CRS: the pixel's area in the CRS's linear unit (rows are equal). Geographic CRS: the cell's
    area on the authalic sphere, which shrinks towards the poles.
    """
    crs = CRS.from_user_input(crs)
    if not crs.is_geographic:
        unit = crs.linear_units_factor[1]
        return np.full(height, abs(transform.a * transform.e - transform.b * transform.d) * unit**2)
    top = transform.f + transform.e * np.arange(height)
    bottom = top + transform.e
    band = np.abs(np.sin(np.radians(top)) - np.sin(np.radians(bottom)))
    return EARTH_RADIUS_M**2 * np.radians(abs(transform.a)) * band
