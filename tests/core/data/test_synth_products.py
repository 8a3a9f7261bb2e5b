"""`h2crop synth --products`: the generated region written as delivered Sentinel-2 L2A scenes (SAFE), STAC
ItemCollections, an EnMAP L2A product and the clean truth; checked against the region it was made from."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio

from h2crop_core.data.schema import H2CROP_SPEC
from h2crop_core.data.synth import SyntheticWorld, generate_taxonomy, synthesize_region, write_products
from h2crop_core.data.synth.s2_sky import grow
from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError

SIZE = 96
TEN_M = {"B02": 0, "B03": 1, "B04": 2, "B08": 6}
TWENTY_M = {"B05": 3, "B06": 4, "B07": 5, "B8A": 7, "B11": 8, "B12": 9}
NAME = re.compile(r"^S2[AB]_MSIL2A_(\d{8})T\d{6}_N(\d{4})_R\d{3}_T\d{2}[C-X][A-Z]{2}_\d{8}T\d{6}$")
DROPPED = (0, 1, 2, 3, 8, 9, 10)
HAZE_MAX = 0.04 + 1e-4


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> Path:
    world = SyntheticWorld.create(generate_taxonomy(seed=0), H2CROP_SPEC, 0)
    folder = tmp_path_factory.mktemp("region") / "region"
    synthesize_region(folder, world, size=SIZE, seed=3, progress=False)
    return folder


def _enmap_available() -> bool:
    try:
        import h2crop_core.data.synth.enmap_product  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def products(region, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("products") / "products"
    write_products(region, out, scenes_per_month=3, seed=1, zipped=2, progress=False, enmap=_enmap_available())
    return out


def _record(products: Path) -> dict:
    return json.loads((products / "products.json").read_text())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _metadata(products: Path, scene: dict) -> ElementTree.Element:
    path = products / scene["path"]
    if scene["zipped"]:
        with zipfile.ZipFile(path) as archive:
            return ElementTree.fromstring(archive.read(f"{scene['name']}.SAFE/MTD_MSIL2A.xml"))
    return ElementTree.parse(path / "MTD_MSIL2A.xml").getroot()


def _texts(root: ElementTree.Element, name: str) -> list[str]:
    return [element.text for element in root.iter() if _local(element.tag) == name]


def _images(products: Path, scene: dict) -> dict[str, np.ndarray]:
    """Band (and SCL) -> its array, read through the GDAL path of a folder or a zip."""
    images = {}
    for stem in _texts(_metadata(products, scene), "IMAGE_FILE"):
        band = stem.split("_")[-2]
        path = products / scene["path"]
        href = f"/vsizip/{path}/{scene['name']}.SAFE/{stem}.jp2" if scene["zipped"] else f"{path}/{stem}.jp2"
        with rasterio.open(href) as handle:
            images[band] = handle.read(1)
    return images


def _truth(products: Path, month: int) -> np.ndarray:
    with rasterio.open(products / "truth" / f"S2_2022-{month:02d}.tif") as handle:
        return handle.read().astype(np.float64)


def _mean_2x2(array: np.ndarray) -> np.ndarray:
    h, w = array.shape[-2:]
    return array.reshape(*array.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def test_safe_layout_names_and_metadata(products):
    record = _record(products)
    scenes = record["scenes"]
    assert len(scenes) == 36 and record["image_format"] == "JP2"
    for scene in scenes:
        match = NAME.match(scene["name"])
        assert match and match.group(2) == scene["baseline"].replace(".", "")
        root = _metadata(products, scene)
        assert _local(root.tag) == "Level-2A_User_Product"
        assert _texts(root, "PROCESSING_BASELINE") == [scene["baseline"]]
        assert _texts(root, "PRODUCT_TYPE") == ["S2MSI2A"] and _texts(root, "BOA_QUANTIFICATION_VALUE") == ["10000"]
        offsets = {e.get("band_id"): e.text for e in root.iter() if _local(e.tag) == "BOA_ADD_OFFSET"}
        if scene["baseline"] >= "04.00":
            assert offsets == {str(i): "-1000" for i in range(13)}
        else:
            assert offsets == {} and not _texts(root, "BOA_ADD_OFFSET_VALUES_LIST")
        listed = _texts(root, "IMAGE_FILE")
        assert sorted(stem.rsplit("_", 2)[-2] for stem in listed) == sorted([*TEN_M, *TWENTY_M, "SCL"])
        for stem in listed:  # no extension in the metadata; the file lies under it with .jp2
            assert "/IMG_DATA/R10m/" in stem if stem.split("_")[-2] in TEN_M else "/IMG_DATA/R20m/" in stem
            if not scene["zipped"]:
                assert (products / scene["path"] / f"{stem}.jp2").is_file()
        if not scene["zipped"]:
            assert len(list((products / scene["path"]).glob("GRANULE/*/MTD_TL.xml"))) == 1
    zipped = [scene for scene in scenes if scene["zipped"]]
    assert {Path(scene["path"]).name.removeprefix(scene["name"]) for scene in zipped} == {".SAFE.zip", ".zip"}
    january = {scene["date"]: scene["baseline"] for scene in scenes if scene["month"] == 1}
    assert {b for d, b in january.items() if d < "2022-01-25"} == {"03.01"}
    assert {b for d, b in january.items() if d >= "2022-01-25"} == {"04.00"}
    assert {scene["baseline"] for scene in scenes if scene["month"] > 1} == {"04.00", "05.09"}
    assert all(len({s["date"] for s in scenes if s["month"] == m}) == 3 for m in range(1, 13))


def test_dns_decode_to_the_truth_where_clear_for_both_baselines(products):
    checked, compared = set(), 0
    for scene in _record(products)["scenes"]:
        if scene["other_zone"] or scene["haze_fraction"] > 0:
            continue
        images, truth = _images(products, scene), _truth(products, scene["month"])
        offset = scene["boa_add_offset"]
        clear20 = ~np.isin(images["SCL"], DROPPED)
        clear10 = np.repeat(np.repeat(clear20, 2, 0), 2, 1)
        for band, index in TEN_M.items():
            # before 04.00 a reflectance under 0.0001 was stored as DN 1: only positive truth decodes back
            usable = clear10 & ((truth[index] > 1000) if offset == 0 else True)
            decoded = images[band].astype(np.float64) + offset + 1000  # back to h2crop's convention
            np.testing.assert_array_equal(decoded[usable], truth[index][usable])
        for band, index in TWENTY_M.items():
            mean = _mean_2x2(truth[index])
            usable = clear20 & ((mean > 1000.5) if offset == 0 else True)
            decoded = images[band].astype(np.float64) + offset + 1000
            assert np.abs(decoded - mean)[usable].max() <= 0.5
        compared += int(clear20.sum())
        checked.add(scene["baseline"] >= "04.00")
    assert checked == {False, True} and compared > 10 * SIZE * SIZE / 4


def test_scl_marks_every_cloud_and_shadow_pixel(products):
    for scene in _record(products)["scenes"]:
        if scene["other_zone"]:
            continue
        images, truth = _images(products, scene), _truth(products, scene["month"])
        scl, offset = images["SCL"], scene["boa_add_offset"]
        ground20 = (np.stack([_mean_2x2(truth[i]) for i in TWENTY_M.values()]) - 1000) / 10_000
        seen20 = (np.stack([images[band] for band in TWENTY_M]).astype(np.float64) + offset) / 10_000
        ground10 = (np.stack([truth[i] for i in TEN_M.values()]) - 1000) / 10_000
        seen10 = (np.stack([images[band] for band in TEN_M]).astype(np.float64) + offset) / 10_000
        positive = ground20.min(axis=0) > 0.001  # old baselines clip what is below 0
        # what SCL calls clear differs from the ground by unmarked haze at most, at 20 m and at 10 m
        clear20 = ~np.isin(scl, DROPPED) & positive
        assert np.abs(seen20 - ground20)[:, clear20].max() <= HAZE_MAX
        clear10 = np.repeat(np.repeat(~np.isin(scl, DROPPED), 2, 0), 2, 1) & (ground10.min(axis=0) > 0.001)
        assert np.abs(seen10 - ground10)[:, clear10].max() <= HAZE_MAX
        cloud = np.isin(scl, (8, 9))
        assert (seen20 - ground20)[:, cloud].min(initial=1) >= 0.35 - 1e-4
        shadow = (scl == 3) & positive
        assert np.abs(seen20 - 0.5 * ground20)[:, shadow].max(initial=0) <= HAZE_MAX + 1e-4
        nodata = scl == 0
        assert all((images[band][nodata] == 0).all() and (images[band][~nodata] > 0).all() for band in TWENTY_M)
    scenes = _record(products)["scenes"]
    assert sum(s["cloud_fraction"] > 0 for s in scenes) > 12 and sum(s["shadow_fraction"] > 0 for s in scenes) > 8
    assert any(s["cirrus_fraction"] > 0 for s in scenes) and any(s["haze_fraction"] > 0 for s in scenes)
    assert any(s["coverage"] < 0.9 for s in scenes if not s["other_zone"])  # swath edges


def test_the_scene_in_the_neighbouring_zone(products, region):
    others = [scene for scene in _record(products)["scenes"] if scene["other_zone"]]
    assert len(others) >= 3 and {scene["crs"] for scene in others} == {"EPSG:32632"}
    assert all(scene["tile"].startswith("T32") and scene["coverage"] > 0.9 for scene in others)
    scene = next(scene for scene in others if not scene["zipped"])
    stems = {stem.split("_")[-2]: stem for stem in _texts(_metadata(products, scene), "IMAGE_FILE")}
    with rasterio.open(products / scene["path"] / f"{stems['B02']}.jp2") as b02:
        assert b02.crs.to_epsg() == 32632 and b02.res == (10.0, 10.0)
        # back onto the region's grid: the truth, up to the bilinear warp at parcel edges
        values = np.zeros((SIZE, SIZE), np.float64)
        with rasterio.open(region / "s2.tif") as s2:
            rasterio.warp.reproject(
                b02.read(1).astype(np.float64),
                values,
                src_transform=b02.transform,
                src_crs=b02.crs,
                src_nodata=0,
                dst_transform=s2.transform,
                dst_crs=s2.crs,
                dst_nodata=0,
                resampling=rasterio.enums.Resampling.nearest,
            )
    with rasterio.open(products / scene["path"] / f"{stems['SCL']}.jp2") as scl:
        assert scl.crs.to_epsg() == 32632 and scl.res == (20.0, 20.0)
    truth = _truth(products, scene["month"])[0]
    with rasterio.open(products / "truth" / f"clear_2022-{scene['month']:02d}.tif") as handle:
        seen = (values > 0) & (handle.read(1) > 0)
    decoded = values + scene["boa_add_offset"] + 1000
    # within the pixel noise the bilinear warp smooths (about 80 DN); a grid one pixel off is much further
    difference = np.median(np.abs(decoded - truth)[seen])
    shifted = np.median(np.abs(decoded[:, 1:] - truth[:, :-1])[seen[:, 1:]])
    assert difference < 60 and shifted > 1.5 * difference and seen.mean() > 0.5


def test_clear_counts_the_forced_spot_and_the_truth(products, region):
    record = _record(products)
    spot = record["forced_cloud"]
    with rasterio.open(region / "s2.tif") as s2:
        stack, transform = s2.read(), s2.transform
    rows, columns = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    x, y = transform @ (columns, rows)
    distance = np.hypot(x - spot["centre"][0], y - spot["centre"][1])
    for month in range(1, 13):
        files = record["truth"][f"2022-{month:02d}"]
        with rasterio.open(products / files["clear"]) as handle:
            clear = handle.read(1)
        with rasterio.open(products / files["haze"]) as handle:
            assert (handle.read(1) <= clear).all()
        with rasterio.open(products / files["s2"]) as handle:
            np.testing.assert_array_equal(handle.read(), stack[(month - 1) * 10 : month * 10])
            assert handle.nodata == -32768 and handle.descriptions[0] == "B2" and handle.descriptions[-1] == "B12"
        if month == spot["month"]:
            assert (clear[distance <= spot["radius_m"]] == 0).all() and (distance <= spot["radius_m"]).sum() > 50
            assert (clear[distance > spot["radius_m"] + spot["margin_m"] + 30] >= 1).all()
        else:
            assert (clear >= 1).all() and files["pixels_without_clear"] == 0
    # the counts are the scenes' SCL: a month with its scenes all in the region's zone, recounted
    scenes = [s for s in record["scenes"] if s["month"] == 3]
    assert not any(s["other_zone"] for s in scenes)
    scls = [np.repeat(np.repeat(_images(products, s)["SCL"], 2, 0), 2, 1) for s in scenes]
    with rasterio.open(products / record["truth"]["2022-03"]["clear"]) as handle:
        np.testing.assert_array_equal(handle.read(1), sum(~np.isin(scl, DROPPED) for scl in scls))
    # and a compositor that dilates the dropped pixels by 40 m (4 px) still finds a clear one everywhere
    dilated = [~np.isin(scl, DROPPED) & ~grow(np.isin(scl, DROPPED) & (scl != 0), 4) for scl in scls]
    assert np.logical_or.reduce(dilated).all()


def test_stac_item_collections_load_and_their_hrefs_open(products):
    import pystac

    record = _record(products)
    by_name = {scene["name"]: scene for scene in record["scenes"]}
    earth = pystac.ItemCollection.from_file(str(products / record["stac"]["earth_search"]))
    planetary = pystac.ItemCollection.from_file(str(products / record["stac"]["planetary_computer"]))
    assert [item.id for item in earth] == [item.id for item in planetary] == list(by_name)
    es_keys = {"blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22", "scl"}
    pc_keys = {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"}
    for item in earth:
        scene = by_name[item.id]
        assert set(item.assets) == es_keys and item.properties["s2:processing_baseline"] == scene["baseline"]
        # written as proj:epsg (projection v1.1, as Earth Search); pystac may migrate it to proj:code on reading
        code = item.properties.get("proj:code") or f"EPSG:{item.properties['proj:epsg']}"
        assert code == scene["crs"]
        assert item.datetime.strftime("%Y-%m-%dT%H:%M:%SZ") == scene["time"]
        band = item.assets["red"].extra_fields["raster:bands"][0]
        assert band["scale"] == 0.0001 and band["offset"] == (-0.1 if scene["baseline"] >= "04.00" else 0.0)
    assert all(set(item.assets) == pc_keys for item in planetary)
    picks = [
        next(item for item in collection if by_name[item.id]["zipped"] is z)
        for collection in (earth, planetary)
        for z in (False, True)
    ]
    for item in picks:
        for asset in item.assets.values():
            href = asset.get_absolute_href()
            assert href.startswith("/vsizip/") == by_name[item.id]["zipped"]
            with rasterio.open(href) as handle:
                assert handle.shape == tuple(asset.extra_fields["proj:shape"])


def test_generation_is_deterministic_atomic_and_products_json_comes_last(region, tmp_path):
    def run(name: str, seed: int, image_format: str = "auto") -> dict:
        write_products(
            region,
            tmp_path / name,
            scenes_per_month=2,
            seed=seed,
            progress=False,
            enmap=False,
            image_format=image_format,
        )
        return json.loads((tmp_path / name / "products.json").read_text().replace(str(tmp_path / name), "ROOT"))

    a, b = run("a", 5), run("b", 5)
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for file in files:  # the same bytes, up to the folder's own path in the JSON files
        assert (tmp_path / "a" / file).read_bytes().replace(b"/a/", b"/b/") == (tmp_path / "b" / file).read_bytes()
    last = (tmp_path / "a" / "products.json").stat().st_mtime_ns
    assert all((tmp_path / "a" / f).stat().st_mtime_ns <= last for f in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # another seed, another sky; the GeoTIFF fallback (SAFE names with .tif); the old products replaced whole
    c = run("a", 6, "GTiff")
    assert c["scenes"] != a["scenes"] and c["image_format"] == "GTiff" and not list((tmp_path / "a").rglob("*.jp2"))
    assert len(list((tmp_path / "a" / "s2").rglob("*_B8A_20m.tif"))) == 24


def test_bad_regions_and_settings_are_refused_in_one_line(region, tmp_path):
    with pytest.raises(RegionError, match="region.json"):
        write_products(tmp_path / "nowhere", tmp_path / "p", progress=False)
    with pytest.raises(SettingError, match="scenes_per_month"):
        write_products(region, tmp_path / "p", scenes_per_month=1, progress=False)
    with pytest.raises(SettingError, match="zipped"):
        write_products(region, tmp_path / "p", zipped=99, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SettingError, match="holds no products.json"):
        write_products(region, tmp_path / "mine", progress=False)
    world = SyntheticWorld.create(generate_taxonomy(seed=0), H2CROP_SPEC, 0)
    synthesize_region(tmp_path / "odd", world, size=99, seed=0, progress=False)
    with pytest.raises(RegionError, match="even size"):
        write_products(tmp_path / "odd", tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_the_enmap_product(products):
    record = _record(products)
    if record["enmap"] is None:
        pytest.skip("h2crop_core.data.synth.enmap_product is not there yet: the EnMAP product was not written")
    product = products / record["enmap"]["path"]
    assert product.exists() and len(record["enmap"]["wavelengths_nm"]) == 224
    if product.is_dir():
        assert (product / f"{record['enmap']['name']}-METADATA.XML").is_file()
        assert (product / f"{record['enmap']['name']}-SPECTRAL_IMAGE.TIF").is_file()
