"""The target grid: snapped bounds, blocks covering it exactly once, the grid of an existing raster."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from h2crop_core.compositing.grid import TargetGrid
from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError


def test_bounds_snap_outwards_to_whole_pixels():
    grid = TargetGrid.from_bounds((600_003.0, 4_990_001.0, 600_995.0, 4_990_999.0), "EPSG:32631", 10)
    assert (grid.transform.c, grid.transform.f) == (600_000.0, 4_991_000.0)
    assert (grid.width, grid.height) == (100, 100)
    assert grid.bounds[0] <= 600_003 and grid.bounds[2] >= 600_995 and grid.bounds[1] <= 4_990_001


def test_blocks_cover_the_grid_once():
    grid = TargetGrid("EPSG:32631", Affine(10, 0, 0, 0, -10, 0), 1000, 700)
    seen = np.zeros((700, 1000), int)
    for block in grid.blocks(256):
        seen[block.row : block.row + block.height, block.col : block.col + block.width] += 1
    assert (seen == 1).all() and len(grid.blocks(256)) == 4 * 3


def test_bad_grids_are_refused(tmp_path):
    with pytest.raises(SettingError, match="geographic"):
        TargetGrid.from_bounds((2, 45, 3, 46), "EPSG:4326")
    with pytest.raises(SettingError, match="not a CRS"):
        TargetGrid.from_bounds((0, 0, 10, 10), "EPSG:nope")
    with pytest.raises(SettingError, match="west < east"):
        TargetGrid.from_bounds((10, 0, 0, 10), "EPSG:32631")
    with pytest.raises(RegionError, match="no such file"):
        TargetGrid.like(tmp_path / "missing.tif")


def test_like_takes_a_rasters_grid(tmp_path):
    path = tmp_path / "r.tif"
    transform = Affine(20, 0, 500_000, 0, -20, 5_000_000)
    with rasterio.open(
        path, "w", driver="GTiff", width=30, height=20, count=1, dtype="uint8", crs="EPSG:32632", transform=transform
    ):
        pass
    grid = TargetGrid.like(path)
    assert (grid.width, grid.height, grid.transform) == (30, 20, transform) and "32632" in grid.crs
    assert TargetGrid.from_dict(grid.to_dict()) == grid
