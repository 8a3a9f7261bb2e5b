import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from h2crop_core.data.normalise import NormStats
from h2crop_core.mapping import RegionError, RegionReader, TileGrid

MONTHS = 6  # the jun window


@pytest.fixture(scope="module")
def stats() -> NormStats:
    rng = np.random.default_rng(0)
    return NormStats(rng.uniform(500, 1500, 10), rng.uniform(100, 300, 10), rng.uniform(500, 1500, 218), rng.uniform(100, 300, 218))


def reader_for(region, stats, modalities=("s2", "enmap", "prior"), **kwargs):
    expected = dict(s2_bands=10, enmap_bands=218, factor=3) | kwargs
    return RegionReader(region, "jun", modalities, stats, **expected)


def test_tiles_read_the_rasters_under_them_z_scored(synth_root, stats):
    region = synth_root / "region"
    reader = reader_for(region, stats)
    tile = TileGrid(*reader.shape, tile=96, margin=8).tiles()[4]  # an inner tile: offsets in both axes
    sample = reader.read(tile)
    assert sample["s2"].shape == (MONTHS, 10, 96, 96) and sample["s2"].dtype == np.float32
    assert sample["enmap"].shape == (218, 32, 32) and sample["prior"].shape == (4, 96, 96)
    with rasterio.open(region / "s2.tif") as src:
        raw = src.read(window=Window(tile.col, tile.row, 96, 96))[: MONTHS * 10].reshape(MONTHS, 10, 96, 96)
    expected = (raw - stats.s2_mean[None, :, None, None]) / stats.s2_std[None, :, None, None]
    np.testing.assert_allclose(sample["s2"], expected, rtol=1e-5, atol=1e-5)
    with rasterio.open(region / "s2.tif") as s2, rasterio.open(region / "enmap.tif") as src:
        # the EnMAP window under the tile, found from ground coordinates rather than pixel arithmetic
        under = src.window(*s2.window_bounds(Window(tile.col, tile.row, 96, 96)))
        coarse = src.read(window=under.round_offsets().round_lengths())
        assert coarse.shape == (218, 32, 32)
    np.testing.assert_allclose(sample["enmap"], (coarse - stats.enmap_mean[:, None, None]) / stats.enmap_std[:, None, None], rtol=1e-5, atol=1e-5)
    with rasterio.open(region / "prior.tif") as src:
        np.testing.assert_array_equal(sample["prior"], src.read(window=Window(tile.col, tile.row, 96, 96)))
    assert sample["valid"].all()


def test_nodata_pixels_are_the_band_mean_and_marked_invalid(synth_root, stats, tmp_path):
    region = tmp_path / "region"
    shutil.copytree(synth_root / "region", region)
    with rasterio.open(region / "s2.tif", "r+") as dst:
        block = dst.read(window=Window(10, 20, 5, 4))
        block[:] = dst.nodata
        dst.write(block, window=Window(10, 20, 5, 4))
    tile = TileGrid(192, 192, tile=96, margin=8).tiles()[0]
    sample = reader_for(region, stats).read(tile)
    assert not sample["valid"][20:24, 10:15].any() and sample["valid"].sum() == 96 * 96 - 20
    assert (sample["s2"][:, :, 20:24, 10:15] == 0).all()


def test_incomplete_or_mismatched_regions_are_clear_errors(synth_root, stats, tmp_path):
    region = tmp_path / "region"
    shutil.copytree(synth_root / "region", region)
    with pytest.raises(RegionError, match="bands"):
        reader_for(region, stats, enmap_bands=239)
    with pytest.raises(RegionError, match="s2_bands"):
        reader_for(region, stats, s2_bands=12)
    manifest = json.loads((region / "region.json").read_text())
    manifest["months"] = 4
    (region / "region.json").write_text(json.dumps(manifest))
    with pytest.raises(RegionError, match="months is 4; the model needs at least 6"):
        reader_for(region, stats)
    (region / "enmap.tif").unlink()
    with pytest.raises(RegionError, match="enmap.tif"):
        reader_for(region, stats)
    (region / "region.json").unlink()
    with pytest.raises(RegionError, match="region.json: missing"):
        reader_for(region, stats)


def test_rasters_that_do_not_line_up_are_refused(synth_root, stats, tmp_path):
    region = tmp_path / "region"
    shutil.copytree(synth_root / "region", region)
    with rasterio.open(region / "enmap.tif", "r+") as dst:
        dst.transform = dst.transform @ Affine.translation(1, 0)  # one EnMAP pixel east
    with pytest.raises(RegionError, match="enmap.tif: does not line up with .*s2.tif: transform"):
        reader_for(region, stats)
    assert reader_for(region, stats, modalities=("s2", "prior")).shape == (192, 192)  # S2-only models do not read it
