"""Pixel areas for the map summary: projected units and geographic cells."""

import numpy as np
import pytest
from affine import Affine

from h2crop_core.mapping.area import EARTH_RADIUS_M, row_areas_m2


def test_projected_pixels_have_the_area_of_their_transform_in_metres():
    assert row_areas_m2("EPSG:32631", Affine(10, 0, 600_000, 0, -10, 5_000_000), 3).tolist() == [100.0] * 3
    feet = row_areas_m2("EPSG:2263", Affine(10, 0, 0, 0, -10, 0), 1)[0]  # New York State Plane, US survey feet
    assert feet == pytest.approx(100 * (1200 / 3937) ** 2)


def test_geographic_cells_shrink_towards_the_poles_and_add_up():
    fine = row_areas_m2("EPSG:4326", Affine(0.01, 0, 0, 0, -0.01, 1.0), 100)  # 1° of latitude below the equator + 1°
    coarse = row_areas_m2("EPSG:4326", Affine(1.0, 0, 0, 0, -1.0, 1.0), 1)
    assert fine.sum() * 100 == pytest.approx(coarse[0], rel=1e-9), "rows add up to the cell they split"
    assert coarse[0] / 1e6 == pytest.approx(EARTH_RADIUS_M**2 * np.radians(1) * np.sin(np.radians(1)) / 1e6)
    assert coarse[0] / 1e6 == pytest.approx(12_364, rel=1e-3)  # a 1° cell at the equator
    north = row_areas_m2("EPSG:4326", Affine(1.0, 0, 0, 0, -1.0, 61.0), 1)[0]
    assert north / coarse[0] == pytest.approx(np.cos(np.radians(60.5)), rel=1e-3)
