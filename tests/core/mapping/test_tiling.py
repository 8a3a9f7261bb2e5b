import numpy as np
import pytest

from h2crop_core.mapping import TileGrid


@pytest.mark.parametrize(
    "height, width, tile, margin",
    [
        (192, 192, 96, 8),
        (1008, 1008, 192, 16),
        (288, 600, 96, 0),
        (96, 300, 96, 20),
        (195, 384, 192, 30),
        (301, 200, 96, 8),
        (50, 70, 96, 8),
        (97, 1000, 96, 16),
    ],
)
def test_cores_partition_the_region_and_stay_inside_their_tiles(height, width, tile, margin):
    """Any raster size: the last tiles may run off the far edges by less than one EnMAP pixel (or, for a
    raster smaller than a tile, up to the tile), never the cores."""
    grid = TileGrid(height, width, tile=tile, margin=margin)
    padded = [max(tile, -(-n // 3) * 3) for n in (height, width)]
    owners = np.zeros((height, width), dtype=np.int32)
    for t in grid.tiles():
        assert 0 <= t.row <= padded[0] - tile and 0 <= t.col <= padded[1] - tile
        assert t.row % 3 == 0 and t.col % 3 == 0  # whole EnMAP pixels under every tile
        row0, row1, col0, col1 = t.core
        assert t.row <= row0 < row1 <= t.row + tile and t.col <= col0 < col1 <= t.col + tile
        # inner edges keep the margin: only region borders may reach the tile edge
        for inner_edge, distance in (
            (row0 > 0, row0 - t.row),
            (col0 > 0, col0 - t.col),
            (row1 < height, t.row + tile - row1),
            (col1 < width, t.col + tile - col1),
        ):
            if inner_edge:
                assert distance >= margin
        owners[row0:row1, col0:col1] += 1
    assert (owners == 1).all()


def test_core_in_tile_slices_the_owned_pixels():
    grid = TileGrid(288, 288, tile=96, margin=8)
    tile = grid.tiles()[4]
    region = np.arange(288 * 288).reshape(288, 288)
    window = region[tile.row : tile.row + tile.size, tile.col : tile.col + tile.size]
    row0, row1, col0, col1 = tile.core
    np.testing.assert_array_equal(window[tile.core_in_tile], region[row0:row1, col0:col1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=0, width=300, tile=96), "has no pixels"),
        (dict(height=300, width=300, tile=100), "multiple of 96"),
        (dict(height=300, width=300, tile=96, margin=47), "leaves no core"),
    ],
)
def test_bad_grids_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TileGrid(**kwargs)
