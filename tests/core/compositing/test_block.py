"""Compositing blocks of generated L2A scenes against the clean monthly truth they were made from.

Tolerances are what was measured on these products: 10 m bands of scenes on the target grid come back exactly
(both baselines); a scene of the neighbouring UTM zone alone differs by a median ~45 DN (its noise smoothed by
warping there and back) and more at parcel edges (99th percentile ~150-500 DN); 20 m bands are 2x2 means read
back bilinearly (median ~70 DN, 99th percentile ~900).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from h2crop_core.compositing.block import Compositor, dilate
from h2crop_core.compositing.grid import TargetGrid
from h2crop_core.compositing.options import CompositeOptions
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.harmonise import NODATA
from h2crop_core.products.scenes import find_scenes

TEN_M = [0, 1, 2, 6]  # B2, B3, B4, B8 in the model's order
TWENTY_M = [3, 4, 5, 7, 8, 9]


@pytest.fixture(scope="module")
def scenes(synth_products):
    return find_scenes(str(synth_products / "s2"), year=2022)


@pytest.fixture(scope="module")
def grid(synth_products):
    return TargetGrid.like(synth_products / "truth" / "S2_2022-01.tif")


def truth(products, month: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    read = lambda kind, band=None: rasterio.open(products / "truth" / f"{kind}_2022-{month:02d}.tif").read(band)  # noqa: E731
    return read("S2").astype(int), read("clear", 1), read("haze", 1)


def composite(scenes, grid, month, **options):
    block = grid.blocks(grid.width)[0]
    compositor = Compositor(scenes, grid, (month,), CompositeOptions(**options))
    try:
        return compositor.month(month, block)
    finally:
        compositor.close()


def other_zone_months(products) -> set[int]:
    return {s["month"] for s in json.loads((products / "products.json").read_text())["scenes"] if s["other_zone"]}


@pytest.mark.parametrize("month", [1, 2, 5])
def test_composites_equal_the_truth_where_a_clear_observation_exists(synth_products, scenes, grid, month):
    data, count, ids = composite(scenes, grid, month)
    expected, clear, haze = truth(synth_products, month)
    valid = data[0] != NODATA
    assert len(ids) == 3 and (data != NODATA).all(axis=0)[valid].all()  # a pixel has every band or none
    assert not (valid & (clear == 0)).any()  # no clear observation: nodata, always
    assert (~valid & (clear > 0)).mean() < 0.01  # clear pixels lost next to clouds (dilation)
    assert (count <= clear).all() and (count[valid] > 0).all()
    diff = np.abs(data.astype(int) - expected)[:, valid & (haze == 0)]
    if month in other_zone_months(synth_products):
        assert np.median(diff[TEN_M]) <= 15 and np.percentile(diff[TEN_M], 99) < 400
    else:
        assert diff[TEN_M].max() <= 1  # on the grid, both baselines: exact
    assert np.median(diff[TWENTY_M]) < 120 and np.percentile(diff[TWENTY_M], 99) < 1300
    # clouds are 3,500 DN and more above the ground: none reached a 10 m band
    assert (data.astype(int) - expected)[TEN_M][:, valid].max() < 1000


def test_each_baseline_alone_gives_the_truth(synth_products, scenes, grid):
    january = [s for s in scenes if s.month == 1]
    baselines = {s.baseline for s in january}
    assert any(s.offsets["B2"] == 0 for s in january) and any(s.offsets["B2"] == -1000 for s in january), baselines
    expected, _, haze = truth(synth_products, 1)
    for group in ([s for s in january if s.offsets["B2"] == 0], [s for s in january if s.offsets["B2"] != 0]):
        data, _, _ = composite(group, grid, 1)
        valid = (data[0] != NODATA) & (haze == 0)
        assert valid.mean() > 0.3
        assert np.abs(data.astype(int) - expected)[TEN_M][:, valid].max() <= 1


def test_the_other_zones_scene_is_warped_and_used(synth_products, scenes, grid):
    other = [s for s in scenes if s.crs.endswith("32632")]
    assert other, "the products hold a scene in the neighbouring UTM zone"
    month = other[0].month
    data, count, ids = composite([s for s in other if s.month == month], grid, month)
    expected, _, haze = truth(synth_products, month)
    valid = (data[0] != NODATA) & (haze == 0)
    assert ids == [s.id for s in other if s.month == month] and valid.mean() > 0.3
    diff = np.abs(data.astype(int) - expected)[TEN_M][:, valid]
    assert np.median(diff) < 80 and np.percentile(diff, 99) < 600


@pytest.mark.parametrize("catalog", ["items.json", "items_pc.json"])
def test_stac_and_safe_routes_give_the_same_composites(synth_products, scenes, grid, catalog):
    from_stac = find_scenes(str(synth_products / "stac" / catalog), year=2022)
    assert sorted(s.id for s in from_stac) == sorted(s.id for s in scenes)
    for month in (1, 2):
        for a, b in zip(composite(from_stac, grid, month), composite(scenes, grid, month)):
            np.testing.assert_array_equal(a, b)


def test_least_cloudy_takes_one_clear_scene_per_pixel_and_mean_averages(synth_products, scenes, grid):
    expected, _, haze = truth(synth_products, 3)
    best, count, _ = composite(scenes, grid, 3, method="least-cloudy")
    mean, _, _ = composite(scenes, grid, 3, method="mean")
    valid = (best[0] != NODATA) & (haze == 0)
    assert np.abs(best.astype(int) - expected)[TEN_M][:, valid].max() <= 1
    assert (best[0] != NODATA).sum() == (mean[0] != NODATA).sum() == (count > 0).sum()
    assert np.median(np.abs(mean.astype(int) - expected)[:, valid]) < 80


def test_dilation_grows_a_mask_by_whole_pixels():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    assert dilate(mask, 1).sum() == 9 and dilate(mask, 2).sum() == 25 and dilate(mask, 0).sum() == 1


def test_scene_sources_that_hold_nothing_are_refused(synth_products, tmp_path):
    with pytest.raises(RegionError, match="no \\*.SAFE folders or zips"):
        find_scenes(str(tmp_path))
    with pytest.raises(RegionError, match="no scene of 2019 \\(scenes found from 2022\\)"):
        find_scenes(str(synth_products / "s2"), year=2019)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(RegionError, match="bad.zip: not a zip file"):
        find_scenes(str(tmp_path / "bad.zip"))


def test_composites_do_not_depend_on_the_block_size(scenes, grid):
    """The SCL dilation reaches across block edges and the warper's kernel is fixed, so blocks of any size
    tile into the same composite (the other zone's scene in February, the forced cloud in May)."""
    from h2crop_core.compositing.block import nan_median  # noqa: F401 - the median every block uses

    def tiled(size: int) -> np.ndarray:
        compositor = Compositor(scenes, grid, (2, 5), CompositeOptions(dilate=2))
        out = np.zeros((2, 11, grid.height, grid.width), np.int16)
        for block in grid.blocks(size):
            result = compositor.block(block)
            rows, cols = slice(block.row, block.row + block.height), slice(block.col, block.col + block.width)
            out[:, :10, rows, cols], out[:, 10, rows, cols] = result["data"], result["count"]
        compositor.close()
        return out

    whole = tiled(grid.width)
    for size in (37, 64):
        np.testing.assert_array_equal(tiled(size), whole)


def test_the_median_of_few_observations_is_numpys():
    from h2crop_core.compositing.block import nan_median

    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3, 20, 20)).astype(np.float32)
    count = rng.integers(0, 6, size=(20, 20))
    unobserved = np.arange(5)[:, None, None] >= count[None]  # the first `count` observations of a pixel
    values[np.broadcast_to(unobserved[:, None], values.shape)] = np.nan
    shuffled = rng.permuted(values, axis=0)  # observations in any order
    with pytest.warns(RuntimeWarning):
        expected = np.nanmedian(shuffled, axis=0)
    np.testing.assert_array_equal(nan_median(shuffled.copy(), count), expected)
