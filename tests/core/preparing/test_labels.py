"""Parcels -> labels: national codes through a crosswalk against an independent point-in-polygon rasterisation,
unknown codes reported and unlabelled (never background), erosion of exactly the border pixels."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from h2crop_core.data.synth.tree import generate_taxonomy
from h2crop_core.preparing.crosswalk import Crosswalk, CrosswalkError, classes_of_codes, normalise_code
from h2crop_core.preparing.labels import Parcels, burn_labels

CRS = "EPSG:32631"
TRANSFORM = Affine(10, 0, 600_000, 0, -10, 5_000_000)
SIZE = 40


@pytest.fixture(scope="module")
def taxonomy():
    return generate_taxonomy((3, 5, 8, 10), seed=2)


@pytest.fixture(scope="module")
def register(tmp_path_factory, taxonomy):
    """Rotated rectangles (two of them overlapping), in Lambert-93, with national codes: each known one maps to
    a class, "X9" is not in the crosswalk, "N99" maps to an HCAT3 code the taxonomy lacks, one has no code."""
    rng = np.random.default_rng(0)
    polygons, codes = [], []
    for i in range(14):
        cx, cy = 600_000 + rng.uniform(30, 370), 5_000_000 - rng.uniform(30, 370)
        box = shapely.box(
            cx - rng.uniform(20, 60), cy - rng.uniform(15, 45), cx + rng.uniform(20, 60), cy + rng.uniform(15, 45)
        )
        polygons.append(shapely.affinity.rotate(box, rng.uniform(0, 90)))
        codes.append(f"N{1 + i % 10}")
    codes[3], codes[5], codes[7] = "X9", "N99", None
    frame = gpd.GeoDataFrame({"CODE": codes}, geometry=polygons, crs=CRS).to_crs("EPSG:2154")
    folder = tmp_path_factory.mktemp("register")
    rows = ["original_code;original_name;HCAT3_code"] + [
        f"N{leaf};crop {leaf};{taxonomy.codes[leaf]}" for leaf in range(1, 11)
    ]
    (folder / "crosswalk.csv").write_text("\n".join(rows + ["N99;mystery;3399999999"]) + "\n")
    return frame, Crosswalk.from_csv(folder / "crosswalk.csv")


def independent_labels(frame, crosswalk, taxonomy, outside):
    """Per pixel centre, the parcels containing it (shapely), then the class: one parcel -> its code's class,
    none -> outside, two -> 255."""
    on_grid = frame.to_crs(CRS)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    x, y = TRANSFORM @ (cols + 0.5, rows + 0.5)
    count = np.zeros((SIZE, SIZE), int)
    leaf = np.full((SIZE, SIZE), 0 if outside == "background" else 255)
    by_code = {c: i for i, c in enumerate(taxonomy.codes) if i}
    for geometry, code in zip(on_grid.geometry, on_grid["CODE"]):
        inside = shapely.contains_xy(geometry, x, y)
        count += inside
        leaf[inside] = by_code.get(crosswalk.to_hcat3.get(code or ""), 255)
    leaf[count > 1] = 255
    table = np.full((256, 4), 255)
    table[: len(taxonomy.paths)] = taxonomy.paths
    return np.moveaxis(table[leaf], -1, 0), on_grid


@pytest.mark.parametrize("outside", ["unlabelled", "background"])
def test_labels_from_national_codes_equal_an_independent_rasterisation(register, taxonomy, outside):
    frame, crosswalk = register
    expected, on_grid = independent_labels(frame, crosswalk, taxonomy, outside)
    classes = classes_of_codes(on_grid["CODE"].tolist(), on_grid.area.to_numpy() / 1e4, taxonomy, crosswalk)
    parcels = Parcels(on_grid.geometry.reset_index(drop=True), classes.leaf)
    got = burn_labels(parcels, taxonomy, TRANSFORM, 0, 0, SIZE, outside=outside)
    assert got.dtype == np.uint8 and got.shape == (4, SIZE, SIZE)
    np.testing.assert_array_equal(got, expected)
    assert (got == 255).any() and (got[3] != 255).mean() > 0.1  # the test has both kinds of pixel to compare


def test_unknown_codes_are_reported_and_unlabelled_never_background(register, taxonomy):
    frame, crosswalk = register
    on_grid = frame.to_crs(CRS)
    classes = classes_of_codes(on_grid["CODE"].tolist(), on_grid.area.to_numpy() / 1e4, taxonomy, crosswalk)
    coverage = classes.coverage()
    assert set(coverage["unknown"]) == {"X9", "N99", ""}
    assert coverage["unknown"]["X9"]["why"].startswith("not in the crosswalk")
    assert coverage["unknown"]["N99"]["why"] == "HCAT3 code 3399999999 is not in the taxonomy"
    assert coverage["unknown"][""]["why"] == "no code"
    assert coverage["parcels_unknown"] == 3
    assert coverage["unknown"]["X9"]["area_ha"] == pytest.approx(on_grid.area.iloc[3] / 1e4, rel=1e-3)
    assert list(classes.leaf[[3, 5, 7]]) == [255, 255, 255]
    # the unknown parcels' own pixels (where no other parcel overlaps) are 255 even with outside=background
    parcels = Parcels(on_grid.geometry.reset_index(drop=True), classes.leaf)
    got = burn_labels(parcels, taxonomy, TRANSFORM, 0, 0, SIZE, outside="background")
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    x, y = TRANSFORM @ (cols + 0.5, rows + 0.5)
    only_x9 = shapely.contains_xy(on_grid.geometry.iloc[3], x, y)
    for i, geometry in enumerate(on_grid.geometry):
        if i != 3:
            only_x9 &= ~shapely.contains_xy(geometry, x, y)
    assert only_x9.any() and (got[:, only_x9] == 255).all()


def test_crosswalk_codes_and_errors(tmp_path, taxonomy):
    assert (
        normalise_code(3301090100.0) == normalise_code("3301090100 ") == normalise_code("3301090100.0") == "3301090100"
    )
    assert normalise_code(float("nan")) == normalise_code(None) == ""
    path = tmp_path / "c.csv"
    path.write_text("original_code,HCAT3_code\n1,3301090100\n1,3302000000\n")
    with pytest.raises(CrosswalkError, match=r"line 3: original_code '1' maps to '3302000000' here"):
        Crosswalk.from_csv(path)
    path.write_text("code,hcat\n1,2\n")
    with pytest.raises(CrosswalkError, match=r"missing column\(s\) \['original_code', 'HCAT3_code'\]"):
        Crosswalk.from_csv(path)
    # HCAT3 codes straight through the taxonomy, numbers as the register stores them
    classes = classes_of_codes([float(taxonomy.codes[4]), taxonomy.codes[2]], np.ones(2), taxonomy)
    assert list(classes.leaf) == [4, 2]


def independent_erosion(index, erode):
    """A parcel pixel is a border pixel if any pixel within ``erode`` (Chebyshev) has another index."""
    out = np.zeros(index.shape, bool)
    height, width = index.shape
    for r in range(height):
        for c in range(width):
            window = index[max(0, r - erode) : r + erode + 1, max(0, c - erode) : c + erode + 1]
            out[r, c] = index[r, c] != 0 and (window != index[r, c]).any()
    return out


@pytest.mark.parametrize("erode", [1, 2])
def test_erosion_removes_exactly_the_border_pixels_even_at_tile_edges(register, taxonomy, erode):
    frame, crosswalk = register
    on_grid = frame.to_crs(CRS).iloc[[0, 1, 2, 4, 6, 8, 9, 10, 11, 12, 13]].reset_index(drop=True)
    classes = classes_of_codes(on_grid["CODE"].tolist(), np.ones(len(on_grid)), taxonomy, crosswalk)
    parcels = Parcels(on_grid.geometry, classes.leaf)
    margin = erode + 1  # the independent reference needs a margin of its own to see beyond the tile
    index = np.zeros((SIZE + 2 * margin,) * 2, int)
    rows, cols = np.mgrid[-margin : SIZE + margin, -margin : SIZE + margin]
    x, y = TRANSFORM @ (cols + 0.5, rows + 0.5)
    for i, geometry in enumerate(on_grid.geometry):
        inside = shapely.contains_xy(geometry, x, y)
        index[inside & (index != 0)] = -1
        index[inside & (index == 0)] = i + 1
    border = independent_erosion(index, erode)[margin:-margin, margin:-margin]
    whole = burn_labels(parcels, taxonomy, TRANSFORM, 0, 0, SIZE)
    eroded = burn_labels(parcels, taxonomy, TRANSFORM, 0, 0, SIZE, erode=erode)
    inner = index[margin:-margin, margin:-margin]
    removed = (whole[3] != 255) & (eroded[3] == 255)
    np.testing.assert_array_equal(removed, border & (inner > 0))
    assert removed.sum() > 20 and (eroded[3] != 255).sum() > 20
    # a tile cut from the middle erodes as the whole does (the margin is burnt too)
    part = burn_labels(parcels, taxonomy, TRANSFORM, 8, 12, 20, erode=erode)
    np.testing.assert_array_equal(part, eroded[:, 8:28, 12:32])
