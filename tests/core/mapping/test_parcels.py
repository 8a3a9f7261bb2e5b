"""Per-parcel statistics: majority, share and confidence against an independent count, GeoParquet out."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from h2crop_core.mapping import MappingRecordError, TileGrid, TileStore, write_level_cogs
from h2crop_core.mapping import parcels as parcels_module
from h2crop_core.mapping.parcels import parcel_statistics
from h2crop_core.mapping.results import TileResult

CRS = "EPSG:32631"
TRANSFORM = Affine(10, 0, 600_000, 0, -10, 5_000_000)
COLUMNS = [
    "fid",
    *[f"level{k}_{what}" for k in range(1, 5) for what in ("id", "name")],
    "level4_share",
    "level4_confidence",
    "n_pixels",
    "geometry",
]


def write_map(folder, ids, confidence, taxonomy):
    """A finished map folder holding exactly ``ids`` and ``confidence`` (4, H, W)."""
    height, width = ids.shape[1:]
    tiles = TileGrid(height, width, tile=192, margin=0).tiles()
    store = TileStore(folder, {"test": 1})
    for tile in tiles:
        row0, row1, col0, col1 = tile.core
        store.write(tile, TileResult(ids[:, row0:row1, col0:col1], confidence[:, row0:row1, col0:col1]))
    write_level_cogs(
        store, tiles, (1, 2, 3, 4), {"crs": CRS, "transform": TRANSFORM, "height": height, "width": width}, taxonomy
    )
    return folder


@pytest.fixture(scope="module")
def noisy_map(synth_taxonomy, tmp_path_factory):
    """Per pixel a random valid path (mostly the parcel's own leaf: blocks of 24 px share one), random
    confidence, and a nodata strip."""
    rng = np.random.default_rng(1)
    height, width = 192, 288
    block_leaf = rng.integers(1, len(synth_taxonomy.paths), size=(height // 24 + 1, width // 24 + 1))
    leaf = np.kron(block_leaf, np.ones((24, 24), np.int64))[:height, :width]
    noise = rng.random((height, width)) < 0.3
    leaf[noise] = rng.integers(0, len(synth_taxonomy.paths), int(noise.sum()))
    ids = np.moveaxis(synth_taxonomy.paths[leaf], -1, 0).astype(np.uint8)
    confidence = rng.integers(1, 256, size=ids.shape).astype(np.uint8)
    ids[:, 100:110, :] = 255
    confidence[:, 100:110, :] = 0
    return write_map(tmp_path_factory.mktemp("noisy") / "map", ids, confidence, synth_taxonomy), ids, confidence


def random_parcels(rng, count):
    """Disjoint convex polygons with float vertices over (and some across the edges of) the map, in the
    map's CRS: each in its own 250 m cell, most spanning several 64-px blocks."""
    cells = rng.choice(14 * 10, size=count, replace=False)
    polygons = []
    for cell in cells:
        x, y = 599_800 + 250 * (cell % 14), 4_997_800 + 250 * (cell // 14)
        points = np.column_stack([x + rng.uniform(0, 245, 6), y + rng.uniform(0, 245, 6)])
        polygons.append(shapely.convex_hull(shapely.multipoints(points)))
    polygons.append(shapely.box(700_000, 4_000_000, 700_100, 4_000_100))  # far outside the map
    polygons.append(shapely.box(601_000.1, 4_998_905.2, 601_200.3, 4_998_996.9))  # only nodata (rows 100-110)
    return polygons


def independent_counts(polygon, ids, confidence):
    """Pixels whose centre lies inside ``polygon`` (shapely, not rasterize), class counts and confidences."""
    rows, cols = np.mgrid[0 : ids.shape[1], 0 : ids.shape[2]]
    x, y = TRANSFORM.c + (cols + 0.5) * TRANSFORM.a, TRANSFORM.f + (rows + 0.5) * TRANSFORM.e
    inside = shapely.contains_xy(polygon, x, y) & (ids[3] != 255)
    return ids[3][inside], confidence[3][inside]


def test_parcels_match_an_independent_count_and_round_trip_as_geoparquet(
    noisy_map, synth_taxonomy, tmp_path, monkeypatch
):
    folder, ids, confidence = noisy_map
    monkeypatch.setattr(parcels_module, "BLOCK", 64)  # parcels straddle blocks
    polygons = random_parcels(np.random.default_rng(2), 60)
    lambert = gpd.GeoDataFrame(
        {"code": [f"P{i:03d}" for i in range(len(polygons))]}, geometry=polygons, crs=CRS
    ).to_crs("EPSG:2154")
    lambert.to_file(tmp_path / "parcels.gpkg", driver="GPKG")
    result = parcel_statistics(
        folder, tmp_path / "parcels.gpkg", tmp_path / "out.parquet", id_column="code", batch_size=7, progress=False
    )
    assert result["parcels"] == len(polygons) and result["crs"] == "EPSG:2154"
    table = gpd.read_parquet(tmp_path / "out.parquet")
    assert table.crs == "EPSG:2154" and list(table.columns) == ["code", *COLUMNS[1:]]
    assert table["code"].tolist() == lambert["code"].tolist()
    assert table.geometry.geom_equals_exact(lambert.geometry, tolerance=1e-6).all(), (
        "geometries as they came, in their CRS"
    )
    names = [synth_taxonomy.class_names(k) for k in range(1, 5)]
    for polygon, row in zip(polygons, table.itertuples()):
        classes, conf = independent_counts(polygon, ids, confidence)
        assert row.n_pixels == len(classes)
        if not len(classes):
            assert row.level4_id is None or np.isnan(row.level4_id)
            assert row.level4_share is None or np.isnan(row.level4_share)
            continue
        majority = int(np.argmax(np.bincount(classes)))
        assert row.level4_id == majority and row.level4_name == names[3][majority]
        assert row.level4_share == pytest.approx((classes == majority).mean())
        assert row.level4_confidence == pytest.approx(conf[classes == majority].mean() / 255)
        path = synth_taxonomy.paths[majority]
        assert [row.level1_id, row.level2_id, row.level3_id] == path[:3].tolist(), "levels 1-3 from the leaf's path"
        assert row.level1_name == names[0][path[0]]
    assert table["n_pixels"].iloc[-2] == 0 and table["n_pixels"].iloc[-1] == 0, (
        "outside / over nodata: nulls, not an error"
    )
    assert result["mapped"] == int((table["n_pixels"] > 0).sum()) >= 40


def test_synthetic_parcels_get_their_true_crop_from_a_perfect_map(synth_root, synth_taxonomy, tmp_path):
    """The region's label raster as the map: every labelled parcel's majority is its own crop, share 1."""
    with rasterio.open(synth_root / "region" / "label.tif") as src:
        labels = src.read()
    folder = write_map(tmp_path / "map", labels, np.full(labels.shape, 200, np.uint8), synth_taxonomy)
    output = tmp_path / "crops.parquet"
    parcel_statistics(folder, synth_root / "region" / "parcels.gpkg", output, progress=False)
    table = gpd.read_parquet(output)
    truth = gpd.read_file(synth_root / "region" / "parcels.gpkg")
    assert table.crs == truth.crs == "EPSG:2154" and table["fid"].tolist() == list(range(1, len(truth) + 1))
    labelled = table["n_pixels"] > 0
    assert labelled.mean() > 0.9
    np.testing.assert_array_equal(table.loc[labelled, "level4_id"].astype(int), truth.loc[labelled, "level4_id"])
    assert (table.loc[labelled, "level4_share"] == 1.0).all()
    assert table.loc[labelled, "level4_confidence"].round(6).eq(round(200 / 255, 6)).all()
    assert synth_taxonomy.valid_path_mask(
        np.stack([table.loc[labelled, f"level{k}_id"].astype(int) for k in range(1, 5)])[:, None]
    ).all()


def test_parcels_need_a_finished_map_and_a_readable_file(noisy_map, tmp_path):
    folder, _, _ = noisy_map
    with pytest.raises(MappingRecordError, match="map.json: missing; .* is not a finished h2crop map"):
        parcel_statistics(tmp_path, tmp_path / "parcels.gpkg", tmp_path / "out.parquet", progress=False)
    from h2crop_core.mapping.vectors import VectorError

    with pytest.raises(VectorError, match=r"nope.gpkg: no such file"):
        parcel_statistics(folder, tmp_path / "nope.gpkg", tmp_path / "out.parquet", progress=False)
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(600_000, 4_999_000, 600_100, 4_999_100)], crs=CRS).to_parquet(
        tmp_path / "p.parquet"
    )
    with pytest.raises(VectorError, match=r"p.parquet: no column 'ID' \(--id-column\); it has \['a', 'geometry'\]"):
        parcel_statistics(folder, tmp_path / "p.parquet", tmp_path / "out.parquet", id_column="ID", progress=False)
    parcel_statistics(
        folder, tmp_path / "p.parquet", tmp_path / "out.parquet", id_column="a", progress=False
    )  # GeoParquet in
    assert gpd.read_parquet(tmp_path / "out.parquet")["n_pixels"].iloc[0] == 100
    assert not list(tmp_path.glob(".*partial*"))
    assert json.loads((folder / "map.json").read_text())["levels"] == [1, 2, 3, 4]
