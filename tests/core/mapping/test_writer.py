import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from h2crop_core.mapping import MappingRecordError, TileGrid, TileStore, write_level_cogs
from h2crop_core.taxonomy import Taxonomy

GRID = {"crs": "EPSG:32631", "transform": Affine(10, 0, 600_000, 0, -10, 5_000_000)}


def constant_cores(store, tiles, taxonomy):
    """Tile i's core holds, at level k, class (i mod n_k) + 1: every pixel says which tile wrote it."""
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        values = [(tile.index % (n - 1)) + 1 for n in taxonomy.num_classes]
        store.write(tile, np.stack([np.full((row1 - row0, col1 - col0), v, np.uint8) for v in values]))


def test_level_cogs_mosaic_the_owned_cores(synth_taxonomy: Taxonomy, tmp_path):
    grid = TileGrid(600, 600, tile=192, margin=16)
    tiles = grid.tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    constant_cores(store, tiles, synth_taxonomy)
    manifest = write_level_cogs(store, tiles, (1, 2, 3, 4), {**GRID, "height": 600, "width": 600}, synth_taxonomy)
    assert json.loads((tmp_path / "map" / "map.json").read_text()) == manifest
    assert manifest["files"] == {**{f"level{k}": f"level{k}.tif" for k in range(1, 5)}, "quicklook": "quicklook.png"}
    from PIL import Image

    assert Image.open(tmp_path / "map" / "quicklook.png").size[0] > 400
    expected = np.zeros((4, 600, 600), np.uint8)
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        expected[:, row0:row1, col0:col1] = store.read(tile.index)
    for k in range(1, 5):
        with rasterio.open(tmp_path / "map" / f"level{k}.tif") as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.overviews(1), "a COG of 600 px with 256-px blocks has overviews"
            assert src.crs.to_string() == "EPSG:32631" and src.transform == GRID["transform"] and src.nodata == 255
            np.testing.assert_array_equal(src.read(1), expected[k - 1])
            colormap = src.colormap(1)
            assert colormap[1][:3] == tuple(int(c) for c in synth_taxonomy.colours(k)[1])
            assert src.tags(1)["class_1"] == synth_taxonomy.class_names(k)[1]
    assert not list((tmp_path / "map").glob(".*")), "no staging or partial files left behind"


def test_unfinished_tiles_never_give_a_map(synth_taxonomy, tmp_path):
    tiles = TileGrid(288, 288, tile=96, margin=8).tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    constant_cores(store, tiles[:-1], synth_taxonomy)
    with pytest.raises(ValueError, match="1 tiles are not finished"):
        write_level_cogs(store, tiles, (1, 2, 3, 4), {**GRID, "height": 288, "width": 288}, synth_taxonomy)
    assert not (tmp_path / "map" / "map.json").exists() and not store.complete
    assert store.finished() == {t.index for t in tiles[:-1]}


def test_a_different_run_is_refused_not_mixed_in(tmp_path):
    TileStore(tmp_path / "map", {"checkpoint": "a", "grid": {"tile": 96}})
    TileStore(tmp_path / "map", {"checkpoint": "a", "grid": {"tile": 96}})  # the same run resumes
    with pytest.raises(MappingRecordError, match=r"different \['grid'\]"):
        TileStore(tmp_path / "map", {"checkpoint": "a", "grid": {"tile": 192}})


def test_tile_writes_check_the_core_shape(tmp_path):
    tile = TileGrid(288, 288, tile=96, margin=8).tiles()[0]
    store = TileStore(tmp_path, {})
    with pytest.raises(ValueError, match="core is"):
        store.write(tile, np.zeros((4, 10, 10), np.uint8))
    assert store.finished() == set()


def test_interrupted_writes_are_never_tiles_and_orphan_tiles_are_refused(tmp_path):
    tiles = TileGrid(288, 288, tile=96, margin=8).tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    store.write(tiles[0], np.zeros((4, *[b - a for a, b in (tiles[0].core[:2], tiles[0].core[2:])]), np.uint8))
    leftover = store.tiles_dir / ".000001.npy.abc123.partial"
    leftover.write_bytes(b"\x93NUMPY half a tile")
    assert store.finished() == {0}
    TileStore(tmp_path / "map", {"run": 1})  # a resume clears what an interrupted write left
    assert not leftover.exists()
    (tmp_path / "map" / "mapping.json").unlink()
    with pytest.raises(MappingRecordError, match="holds tiles but .*mapping.json is missing"):
        TileStore(tmp_path / "map", {"run": 1})
