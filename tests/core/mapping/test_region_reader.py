"""Reading model tiles from the user's rasters: z-scores, warping, monthly files, nodata and refusals."""

import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.synth.user_files import write_monthly_s2
from h2crop_core.mapping import MapInputs, RegionError, RegionReader, TileGrid, inputs_from_region

MONTHS = 6  # the jun window
ALL = ("s2", "enmap", "prior")


@pytest.fixture(scope="module")
def stats() -> NormStats:
    rng = np.random.default_rng(0)
    return NormStats(
        rng.uniform(500, 1500, 10), rng.uniform(100, 300, 10), rng.uniform(500, 1500, 218), rng.uniform(100, 300, 218)
    )


def reader_for(inputs, stats, modalities=ALL, resampling="average", **kwargs):
    expected = dict(s2_bands=10, enmap_bands=218, factor=3) | kwargs
    return RegionReader(inputs, "jun", modalities, stats, resampling=resampling, **expected)


def region_inputs(synth_root, **changes):
    inputs = inputs_from_region(synth_root / "region")
    return MapInputs(**{**inputs.__dict__, **changes})


def rewrite(path, data, like=None, **profile_changes):
    """Write ``data`` to ``path`` with the profile of ``like`` (default: ``path`` itself), changed as asked."""
    with rasterio.open(like or path) as src:
        profile = {**src.profile, **profile_changes, "count": data.shape[0]}
    path.unlink(missing_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def warp_to(src_path, path, crs, resolution, resampling=Resampling.nearest):
    """``src_path`` reprojected into ``crs`` (independently of the reader: rasterio.warp.reproject)."""
    with rasterio.open(src_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=resolution
        )
        data = np.full((src.count, height, width), src.nodata, src.dtypes[0])
        reproject(
            src.read(),
            data,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs=crs,
            resampling=resampling,
            src_nodata=src.nodata,
            dst_nodata=src.nodata,
        )
        profile = {**src.profile, "crs": crs, "transform": transform, "width": width, "height": height}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_tiles_read_the_rasters_under_them_z_scored(synth_root, stats):
    region = synth_root / "region"
    reader = reader_for(inputs_from_region(region), stats)
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
    np.testing.assert_allclose(
        sample["enmap"],
        (coarse - stats.enmap_mean[:, None, None]) / stats.enmap_std[:, None, None],
        rtol=1e-5,
        atol=1e-5,
    )
    with rasterio.open(region / "prior.tif") as src:
        np.testing.assert_array_equal(sample["prior"], src.read(window=Window(tile.col, tile.row, 96, 96)))
    assert sample["valid"].all()


def test_monthly_files_read_as_the_stacked_file(synth_root, stats, tmp_path):
    write_monthly_s2(synth_root / "region" / "s2.tif", tmp_path / "s2")
    (tmp_path / "s2" / "S2_2023-09.tif").unlink()  # months past the window are not needed
    stacked = reader_for(region_inputs(synth_root), stats)
    monthly = reader_for(
        region_inputs(
            synth_root,
            **MapInputs.from_paths(tmp_path / "s2").__dict__
            | {"enmap": stacked.inputs.enmap, "prior": stacked.inputs.prior},
        ),
        stats,
    )
    assert monthly.inputs.s2_months == (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12)
    for tile in TileGrid(192, 192, tile=96, margin=8).tiles()[::4]:
        a, b = stacked.read(tile), monthly.read(tile)
        for key in ("s2", "enmap", "prior", "valid"):
            np.testing.assert_array_equal(a[key], b[key])
    (tmp_path / "s2" / "S2_2023-04.tif").unlink()
    with pytest.raises(RegionError, match=r"s2: no file for month\(s\) \[4\] .*needs months 1-6"):
        reader_for(MapInputs.from_paths(tmp_path / "s2"), stats, modalities=("s2",))
    other_grid = tmp_path / "s2" / "S2_2023-03.tif"
    with rasterio.open(other_grid) as src:
        data = src.read()
    rewrite(other_grid, data, transform=src.transform @ Affine.translation(2, 0))
    write_monthly_s2(synth_root / "region" / "s2.tif", tmp_path / "again")
    (tmp_path / "again" / "S2_2023-04.tif").replace(tmp_path / "s2" / "S2_2023-04.tif")
    with pytest.raises(RegionError, match=r"S2_2023-03.tif: not on the grid of .*S2_2023-01.tif"):
        reader_for(MapInputs.from_paths(tmp_path / "s2"), stats, modalities=("s2",))


def test_enmap_in_another_crs_is_warped_onto_the_s2_grid(synth_root, stats, tmp_path):
    """EnMAP reprojected into the next UTM zone (at 10 m, nearest: every 30 m cell stays whole) and warped
    back by the reader gives the aligned scene's values, except at the scene's rim."""
    utm32 = warp_to(synth_root / "region" / "enmap.tif", tmp_path / "enmap_32632.tif", "EPSG:32632", 10.0)
    aligned = reader_for(region_inputs(synth_root), stats)
    warped = reader_for(region_inputs(synth_root, enmap=str(utm32)), stats, resampling="nearest")
    assert warped._sources["enmap"].warped and not aligned._sources["enmap"].warped
    tiles = TileGrid(192, 192, tile=96, margin=8).tiles()
    same = total = 0
    for tile in tiles:
        a, b = aligned.read(tile)["enmap"], warped.read(tile)["enmap"]
        same += int((a == b).all(axis=0).sum())
        total += a.shape[1] * a.shape[2]
    assert same / total > 0.97, same / total
    # the default (average) on a raster already on the grid: the plain read, offset by whole pixels
    with rasterio.open(synth_root / "region" / "enmap.tif") as src:
        shifted = rewrite(
            tmp_path / "shifted.tif", src.read(), like=src.name, transform=src.transform @ Affine.translation(1, 0)
        )
    reader = reader_for(region_inputs(synth_root, enmap=str(shifted)), stats)
    assert reader._sources["enmap"].offset == (-1, 0)
    sample = reader.read(tiles[0])
    np.testing.assert_array_equal(sample["enmap"][:, :, 1:], aligned.read(tiles[0])["enmap"][:, :, :-1])
    assert not sample["valid"][:, :3].any() and sample["valid"][:, 3:].all(), (
        "no EnMAP west of the shifted scene: no map there"
    )


def test_nodata_in_s2_or_enmap_marks_pixels_invalid(synth_root, stats, tmp_path):
    region = tmp_path / "region"
    shutil.copytree(synth_root / "region", region)
    with rasterio.open(region / "s2.tif", "r+") as dst:
        block = dst.read(window=Window(10, 20, 5, 4))
        block[:] = dst.nodata
        dst.write(block, window=Window(10, 20, 5, 4))
    with rasterio.open(region / "enmap.tif", "r+") as dst:
        block = dst.read(window=Window(20, 2, 2, 1))
        block[:] = dst.nodata
        dst.write(block, window=Window(20, 2, 2, 1))
    tile = TileGrid(192, 192, tile=96, margin=8).tiles()[0]
    sample = reader_for(inputs_from_region(region), stats).read(tile)
    assert not sample["valid"][20:24, 10:15].any() and not sample["valid"][6:9, 60:66].any()
    assert sample["valid"].sum() == 96 * 96 - 20 - 18
    assert (sample["s2"][:, :, 20:24, 10:15] == 0).all() and (sample["enmap"][:, 2, 20:22] == 0).all()
    s2_only = reader_for(inputs_from_region(region), stats, modalities=("s2", "prior")).read(tile)
    assert s2_only["valid"].sum() == 96 * 96 - 20, "a model without EnMAP ignores EnMAP's gaps"


def test_inputs_the_model_cannot_use_are_refused_naming_the_file(synth_root, stats, tmp_path):
    region = synth_root / "region"
    s2_like, enmap_like, prior_like = (region / f"{name}.tif" for name in ("s2", "enmap", "prior"))
    with rasterio.open(s2_like) as src:
        s2 = src.read()
    with rasterio.open(enmap_like) as src:
        enmap, far = src.read(), Affine.translation(50_000, 0) @ src.transform
    cases = [
        (
            dict(s2=(str(rewrite(tmp_path / "s2_115.tif", s2[:115], s2_like)),)),
            r"s2_115.tif: 115 bands is not a whole number of months of 10",
        ),
        (
            dict(s2=(str(rewrite(tmp_path / "s2_40.tif", s2[:40], s2_like)),)),
            r"s2_40.tif: 40 bands = 4 months; the model's window needs 6",
        ),
        (
            dict(enmap=str(rewrite(tmp_path / "enmap_224.tif", np.concatenate([enmap, enmap[:6]]), enmap_like))),
            r"enmap_224.tif: 224 bands; the model reads 218: pick them with --enmap-bands",
        ),
        (
            dict(enmap=str(tmp_path / "enmap_224.tif"), enmap_bands=tuple(range(1, 100))),
            r"enmap_224.tif: --enmap-bands picks 99 bands up to 99 of 224",
        ),
        (
            dict(prior=str(rewrite(tmp_path / "prior_3.tif", np.zeros((3, 192, 192), np.uint8), prior_like))),
            r"prior_3.tif: 3 bands; a prior crop map has 4",
        ),
        (
            dict(enmap=str(rewrite(tmp_path / "far.tif", enmap, enmap_like, transform=far))),
            r"far.tif: does not overlap .*s2.tif",
        ),
        (dict(enmap=str(rewrite(tmp_path / "no_crs.tif", enmap, enmap_like, crs=None))), r"no_crs.tif: has no CRS"),
        (dict(enmap=None), r"the model reads enmap; give it with --enmap"),
    ]
    for changes, message in cases:
        with pytest.raises(RegionError, match=message):
            reader_for(region_inputs(synth_root, **changes), stats)
    picked = reader_for(
        region_inputs(synth_root, enmap=str(tmp_path / "enmap_224.tif"), enmap_bands=tuple(range(1, 219))), stats
    )
    tile = TileGrid(192, 192, tile=96, margin=8).tiles()[0]
    np.testing.assert_array_equal(
        picked.read(tile)["enmap"], reader_for(region_inputs(synth_root), stats).read(tile)["enmap"]
    )
