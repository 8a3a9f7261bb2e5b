"""Bare soil within fields (``gaps``): each pixel's share of soil, and the prosail world's pixels mixing
their canopy with their soil by it."""

import numpy as np
import pytest

from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import SyntheticWorld, generate_taxonomy, synthesize_dataset
from h2crop_core.data.synth.layout import MAX_GAP, gap_field, voronoi_parcels
from h2crop_core.errors import SettingError

SMALL = SampleSpec(size=96)


def test_a_gap_field_has_its_mean_varies_within_parcels_and_is_a_function_of_its_seed():
    parcel, count = voronoi_parcels(96, 96, np.random.default_rng(0))
    gaps = gap_field(parcel, 3, 0.3)
    inside = parcel > 0
    assert (gaps[~inside] == 0).all() and gaps.min() >= 0 and gaps.max() <= MAX_GAP
    assert abs(gaps[inside].mean() - 0.3) < 0.05
    # pixels of one parcel differ (patches and single pixels), and parcels differ in their own mean
    within = np.mean([gaps[parcel == p].std() for p in range(1, count + 1) if (parcel == p).sum() > 20])
    means = [gaps[parcel == p].mean() for p in range(1, count + 1) if (parcel == p).sum() > 20]
    assert within > 0.1 and np.std(means) > 0.05
    np.testing.assert_array_equal(gaps, gap_field(parcel, 3, 0.3))
    assert not np.allclose(gaps, gap_field(parcel, 4, 0.3))
    assert not gap_field(parcel, 3, 0.0).any()


def test_a_prosail_world_mixes_each_pixel_with_its_soil_by_its_share():
    world = SyntheticWorld.create(generate_taxonomy((2, 3, 4, 6), seed=1), SMALL, seed=1, kind="prosail")
    scene = world.scene(96, 96, np.random.default_rng(2))
    scene["seed"] = 7
    closed = world.render(dict(scene), slice(None), np.random.default_rng(5))
    world.gaps = 0.3
    open_ = world.render(scene, slice(None), np.random.default_rng(5))
    gaps = scene["gaps=0.3"]
    s2_change = np.abs(open_[0].astype(float) - closed[0]).mean(axis=(0, 1))  # per pixel
    assert s2_change[gaps == 0].max() <= 1  # int16 rounding only
    # the change is the share times the parcel's own canopy-to-soil difference: one ratio per parcel
    parcel = scene["parcel"]
    spread = [
        np.std(ratio) / np.mean(ratio)
        for p in np.unique(parcel[parcel > 0])
        if len(ratio := s2_change[(parcel == p) & (gaps > 0.1)] / gaps[(parcel == p) & (gaps > 0.1)]) > 10
    ]
    assert len(spread) > 5 and np.median(spread) < 0.05, spread
    # towards the soil: a bare share brightens the red band (index 2) of a green canopy in June
    leaf = scene["parcel_leaf"][scene["parcel"]]
    green = (world.canopy.s2.mean(1)[leaf][..., 5, 6] > 0.3) & (gaps > 0.3)
    assert green.any() and (open_[0][5, 2][green] > closed[0][5, 2][green]).mean() > 0.95
    pooled = gaps.reshape(32, 3, 32, 3).mean(axis=(1, 3))
    enmap_change = np.abs(open_[1].astype(float) - closed[1]).mean(axis=0)
    assert enmap_change[pooled == 0].max() <= 1 and np.median(enmap_change[pooled > 0.3]) > 4 * np.median(
        enmap_change[(pooled > 0) & (pooled < 0.1)]
    )


def test_gaps_are_a_prosail_worlds_and_a_share(tmp_path):
    with pytest.raises(SettingError, match=r"^gaps is a prosail world's mean share of bare soil in \[0, 0.9\)"):
        synthesize_dataset(tmp_path / "d", 1, spec=SMALL, region_size=None, progress=False, gaps=0.3)
    with pytest.raises(SettingError, match="gaps"):
        synthesize_dataset(tmp_path / "d", 1, spec=SMALL, region_size=None, progress=False, world="prosail", gaps=1)
    assert not (tmp_path / "d").exists()
