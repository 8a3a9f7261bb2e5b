import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from h2crop_core.mapping import MappingRecordError, TileGrid, TileStore, write_level_cogs
from h2crop_core.mapping.results import TileResult
from h2crop_core.taxonomy import Taxonomy

GRID = {"crs": "EPSG:32631", "transform": Affine(10, 0, 600_000, 0, -10, 5_000_000)}


def constant_cores(store, tiles, taxonomy, dtype=np.uint8):
    """Tile i's core holds, at level k, class (i mod n_k) + 1 and confidence 10 + i + k: every pixel says
    which tile wrote it."""
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        shape = (row1 - row0, col1 - col0)
        values = [(tile.index % (n - 1)) + 1 for n in taxonomy.num_classes]
        ids = np.stack([np.full(shape, v, dtype) for v in values])
        store.write(tile, TileResult(ids, np.stack([np.full(shape, 10 + tile.index + k, np.uint8) for k in range(4)])))


def test_level_cogs_mosaic_the_owned_cores(synth_taxonomy: Taxonomy, tmp_path):
    grid = TileGrid(600, 600, tile=192, margin=16)
    tiles = grid.tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    constant_cores(store, tiles, synth_taxonomy)
    manifest = write_level_cogs(store, tiles, (1, 2, 3, 4), {**GRID, "height": 600, "width": 600}, synth_taxonomy)
    assert json.loads((tmp_path / "map" / "map.json").read_text()) == manifest
    assert manifest["files"] == {
        **{f"level{k}": f"level{k}.tif" for k in range(1, 5)},
        **{f"confidence_level{k}": f"confidence_level{k}.tif" for k in range(1, 5)},
        "summary": "summary.json",
        "quicklook": "quicklook.png",
    }
    from PIL import Image
    from rio_cogeo.cogeo import cog_validate

    assert Image.open(tmp_path / "map" / "quicklook.png").size[0] > 400
    expected = np.zeros((4, 600, 600), np.uint8)
    expected_confidence = np.zeros((4, 600, 600), np.uint8)
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        expected[:, row0:row1, col0:col1], expected_confidence[:, row0:row1, col0:col1] = store.read(tile.index)
    for k in range(1, 5):
        for name, nodata, values in (
            (f"level{k}", 255, expected[k - 1]),
            (f"confidence_level{k}", 0, expected_confidence[k - 1]),
        ):
            assert cog_validate(tmp_path / "map" / f"{name}.tif", strict=True) == (True, [], [])
            with rasterio.open(tmp_path / "map" / f"{name}.tif") as src:
                assert src.overviews(1), "a COG of 600 px with 256-px blocks has overviews"
                assert (
                    src.crs.to_string() == "EPSG:32631" and src.transform == GRID["transform"] and src.nodata == nodata
                )
                assert src.dtypes[0] == "uint8"
                np.testing.assert_array_equal(src.read(1), values)
        with rasterio.open(tmp_path / "map" / f"level{k}.tif") as src:
            colormap = src.colormap(1)
            assert colormap[1][:3] == tuple(int(c) for c in synth_taxonomy.colours(k)[1])
            assert src.tags(1)["class_1"] == synth_taxonomy.class_names(k)[1]
    # class areas: 10 m pixels are 0.01 ha; the summary's are the mosaic's own pixel counts
    summary = json.loads((tmp_path / "map" / "summary.json").read_text())
    assert summary["grid_km2"] == pytest.approx(600 * 600 * 100 / 1e6) and summary["mapped_km2"] == pytest.approx(
        summary["grid_km2"]
    )
    for k in range(1, 5):
        ids, counts = np.unique(expected[k - 1], return_counts=True)
        names = synth_taxonomy.class_names(k)
        assert summary["class_area_ha"][f"level{k}"] == pytest.approx({names[i]: c * 0.01 for i, c in zip(ids, counts)})
        assert list(summary["class_area_ha"][f"level{k}"].values()) == sorted(
            summary["class_area_ha"][f"level{k}"].values(), reverse=True
        )
    assert not list((tmp_path / "map").glob(".*")), "no staging or partial files left behind"


def test_a_level_of_more_than_255_classes_is_written_as_uint16(tmp_path):
    """The taxonomy CSV allows ids up to 254, but a checkpoint's taxonomy is not bound to that: the map
    widens to uint16 (nodata 65535) rather than wrapping ids around."""
    names = (
        ("background", "a"),
        ("background", "b"),
        ("background", "c"),
        ("background", *(f"leaf{i}" for i in range(1, 300))),
    )
    paths = np.array([[0, 0, 0, 0]] + [[1, 1, 1, i] for i in range(1, 300)])
    wide = Taxonomy(names=names, paths=paths, codes=("",) * 300, source="test")
    tiles = TileGrid(192, 192, tile=96, margin=8).tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        shape = (4, row1 - row0, col1 - col0)
        ids = np.full(shape, 1, np.uint16)
        ids[3] = 280 + tile.index
        ids[3, 0, 0] = 65535  # one pixel without data
        store.write(tile, TileResult(ids, np.full(shape, 200, np.uint8)))
    write_level_cogs(store, tiles, (1, 2, 3, 4), {**GRID, "height": 192, "width": 192}, wide)
    with rasterio.open(tmp_path / "map" / "level4.tif") as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 65535
        level4 = src.read(1)
    assert set(np.unique(level4)) == {280 + t.index for t in tiles} | {65535}
    with rasterio.open(tmp_path / "map" / "level1.tif") as src:
        assert src.dtypes[0] == "uint8"
    summary = json.loads((tmp_path / "map" / "summary.json").read_text())
    assert summary["mapped_km2"] == pytest.approx((192 * 192 - len(tiles)) * 100 / 1e6)


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
    with pytest.raises(MappingRecordError, match=r"other inputs or settings: grid.tile: 96 then, 192 now; choose"):
        TileStore(tmp_path / "map", {"checkpoint": "a", "grid": {"tile": 192}})


def test_record_differences_name_the_file_and_the_field_not_the_whole_record():
    from h2crop_core.records import record_differences

    raster = {"name": "S2_2023-03.tif", "bytes": 10, "sha256": "a" * 64}
    stored = {"inputs": {"rasters": {"s2": [dict(raster, name="S2_2023-01.tif"), raster]}}, "decode": "consistent"}
    now = {
        "inputs": {"rasters": {"s2": [dict(raster, name="S2_2023-01.tif"), dict(raster, sha256="b" * 64)]}},
        "decode": "argmax",
    }
    found = record_differences(stored, now)
    assert found == [
        'decode: "consistent" then, "argmax" now',
        f'inputs.rasters.s2[1] (S2_2023-03.tif).sha256: "{"a" * 17}…{"a" * 17}" then, "{"b" * 17}…{"b" * 17}" now',
    ]
    assert record_differences(stored, stored) == [] and all(len(line) < 160 for line in found)


def test_tile_writes_check_the_core_shape(tmp_path):
    tile = TileGrid(288, 288, tile=96, margin=8).tiles()[0]
    store = TileStore(tmp_path, {})
    with pytest.raises(ValueError, match="core ids is"):
        store.write(tile, TileResult(np.zeros((4, 10, 10), np.uint8), np.zeros((4, 10, 10), np.uint8)))
    assert store.finished() == set()


def test_interrupted_writes_are_never_tiles_and_orphan_tiles_are_refused(tmp_path):
    tiles = TileGrid(288, 288, tile=96, margin=8).tiles()
    store = TileStore(tmp_path / "map", {"run": 1})
    core = np.zeros((4, *[b - a for a, b in (tiles[0].core[:2], tiles[0].core[2:])]), np.uint8)
    store.write(tiles[0], TileResult(core, core))
    leftover = store.tiles_dir / ".000001.npz.abc123.partial"
    leftover.write_bytes(b"\x93NUMPY half a tile")
    assert store.finished() == {0}
    TileStore(tmp_path / "map", {"run": 1})  # a resume clears what an interrupted write left
    assert not leftover.exists()
    (tmp_path / "map" / "mapping.json").unlink()
    with pytest.raises(MappingRecordError, match="holds tiles but .*mapping.json is missing"):
        TileStore(tmp_path / "map", {"run": 1})
