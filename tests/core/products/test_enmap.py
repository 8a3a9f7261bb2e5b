"""EnMAP L2A products read as delivered: bands by wavelength, masks, zips, several products, refusals."""

import re
import shutil
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.synth.enmap_product import write_enmap_product
from h2crop_core.mapping import MapInputs, RegionError, RegionReader, TileGrid
from h2crop_core.products.enmap import MASK_LAYERS, cloud_share, match_bands, open_enmap_source
from h2crop_core.products.enmap_metadata import SPECTRAL_IMAGE, find_products
from h2crop_core.products.wavelengths import BENCHMARK_BANDS, BENCHMARK_ENMAP_NM, ENMAP_L2A_NOMINAL_NM
from tests.core.mapping.test_region_reader import warp_to

ALL_BANDS = list(range(1, 219))


@pytest.fixture(scope="module")
def region(synth_root):
    return synth_root / "region"


@pytest.fixture(scope="module")
def truth(region):
    """The region's EnMAP scene and its grid."""
    with rasterio.open(region / "enmap.tif") as src:
        return src.read(), src.crs, src.transform


@pytest.fixture(scope="module")
def products(region, tmp_path_factory):
    """The region's scene as one product folder (seed 1) and as a zip of the same product."""
    out = tmp_path_factory.mktemp("products")
    folder = write_enmap_product(region / "enmap.tif", out / "folder", seed=1)
    zipped = write_enmap_product(region / "enmap.tif", out / "zip", seed=1, zip_product=True)
    return folder, zipped


def product_file(product, suffix):
    """A file of a generated product, in its folder or in its zip."""
    if product.path.is_dir():
        return str(product.path / f"{product.name}-{suffix}")
    return f"/vsizip/{product.path}/{product.name}/{product.name}-{suffix}"


def flagged(product, layers=MASK_LAYERS):
    """Pixels flagged in ``layers`` of a generated product."""
    mask = None
    for layer in layers:
        with rasterio.open(product_file(product, layer)) as src:
            marked = src.read(1) != 0
        mask = marked if mask is None else mask | marked
    return mask


def read_all(path, truth, wavelengths=BENCHMARK_ENMAP_NM, **kwargs):
    data, crs, transform = truth
    source = open_enmap_source(path, crs, transform, "average", wavelengths, **kwargs)
    try:
        read = source.read(Window(0, 0, data.shape[2], data.shape[1]), ALL_BANDS)
        return read, {
            "products": source.products,
            "bands": [part.bands for part in source.parts],
            "warped": source.warped,
        }
    finally:
        source.close()


def copied(product, folder):
    """A copy of a generated product folder in ``folder``, and its METADATA.XML."""
    copy = folder / product.name
    shutil.copytree(product.path, copy)
    return copy, copy / f"{product.name}-METADATA.XML"


def test_bands_picked_by_wavelength_are_the_regions_bands_where_the_product_is_clear(products, truth):
    product = products[0]
    shifts = np.asarray(product.wavelengths_nm) - np.asarray(ENMAP_L2A_NOMINAL_NM)
    assert (np.abs(shifts) > 0.2).all(), "the product's centres are not the nominal ones"
    data, source = read_all(product.path, truth)
    assert source["bands"] == [BENCHMARK_BANDS]
    assert data.dtype == np.int16 and data.shape == truth[0].shape
    masked = np.ma.getmaskarray(data)
    assert (masked.all(axis=0) == masked.any(axis=0)).all(), "a pixel is masked in every band or in none"
    expected = flagged(product)
    for layer in MASK_LAYERS:
        assert product.flagged[layer] > 0, f"the generated product flags pixels in {layer}"
    np.testing.assert_array_equal(masked[0], expected)
    np.testing.assert_array_equal(data.data[:, ~expected], truth[0][:, ~expected])
    with rasterio.open(product_file(product, SPECTRAL_IMAGE)) as src:
        image = src.read()
    cloud = flagged(product, ("QL_QUALITY_CLOUD.TIF",))
    assert image.shape[0] == 224 and (image[129:135] == -32768).all(), "bands 130-135 are empty"
    assert image[0][cloud].min() > truth[0][0].max(), "the cloud is in the reflectances, bright"


def test_a_zip_product_reads_as_the_folder_without_being_unpacked(products, truth):
    folder, zipped = products
    assert zipped.path.is_file() and [p.name for p in zipped.path.parent.iterdir()] == [zipped.path.name]
    from_folder, _ = read_all(folder.path, truth)
    from_zip, source = read_all(zipped.path, truth)
    assert source["products"][0].prefix.startswith("/vsizip/")
    np.testing.assert_array_equal(np.ma.getmaskarray(from_zip), np.ma.getmaskarray(from_folder))
    np.testing.assert_array_equal(from_zip.filled(0), from_folder.filled(0))


def test_a_folder_of_products_fills_each_ones_cloud_from_the_other(region, truth, products, tmp_path):
    """Two products of one place, clouds in different places: each one's cloud is filled from the other,
    and where both are clear the less cloudy one gives the pixel (the other's values differ by 7 there)."""
    first = products[0]
    other_scene = tmp_path / "enmap_plus7.tif"
    with rasterio.open(region / "enmap.tif") as src:
        profile, shifted = src.profile, src.read() + 7
    with rasterio.open(other_scene, "w", **profile) as dst:
        dst.write(shifted)
    both = tmp_path / "both"
    shutil.copytree(first.path, both / first.path.name)
    second = write_enmap_product(other_scene, both, seed=5, zip_product=True)
    data, source = read_all(both, truth)
    by_cloud = sorted([(first.cloud_cover, first.name), (second.cloud_cover, second.name)])
    assert [p.name for p in source["products"]] == [name for _, name in by_cloud], "least cloud first"
    a, b = flagged(first), flagged(second)
    assert (a & ~b).sum() > 10 and (b & ~a).sum() > 10, "the two clouds lie in different places"
    primary, fallback = (truth[0], shifted) if by_cloud[0][1] == first.name else (shifted, truth[0])
    expected = np.where((a if by_cloud[0][1] == first.name else b)[None], fallback, primary)
    masked = np.ma.getmaskarray(data).all(axis=0)
    np.testing.assert_array_equal(masked, a & b)
    np.testing.assert_array_equal(data.data[:, ~masked], expected[:, ~masked])


def test_the_detectors_overlap_cannot_swap_bands(products, tmp_path):
    """VNIR centres 1.2 nm below nominal and SWIR ones 1.2 nm above: near 900-1000 nm a VNIR band then lies
    nearer a SWIR band's nominal centre than its own, and still each wavelength keeps its detector's band."""
    product = products[0]
    copy, path = copied(product, tmp_path)
    tree = ElementTree.parse(path)
    for band in tree.iter("bandID"):
        number, centre = int(band.get("number")), band.find("wavelengthCenterOfBand")
        nominal = ENMAP_L2A_NOMINAL_NM[number - 1]
        centre.text = f"{nominal - 1.2 if number <= 91 else nominal + 1.2:.3f}"
    tree.write(path)
    assert match_bands(find_products(copy)[0], BENCHMARK_ENMAP_NM) == BENCHMARK_BANDS


def test_without_percent_cloud_cover_the_flagged_share_orders_products(products, tmp_path):
    product = products[0]
    copy, path = copied(product, tmp_path)
    path.write_text(re.sub(r"<percentCloudCover>.*</percentCloudCover>", "", path.read_text()))
    found = find_products(copy)[0]
    assert found.cloud_cover is None and product.cloud_cover > 0
    assert cloud_share(found) == pytest.approx(100 * flagged(product).mean())


def test_a_product_lacking_a_model_wavelength_is_refused_naming_it(products, truth, region, tmp_path):
    product = products[0]
    copy, path = copied(product, tmp_path)  # band 50 left out of the VNIR detector's expectedChannelsList:
    path.write_text(re.sub(r"(<expectedChannelsList>[\d,]*?),50,", r"\1,", path.read_text()))
    wanted = BENCHMARK_ENMAP_NM[49]
    with pytest.raises(
        RegionError, match=rf"{re.escape(product.name)}: no band for the model's {wanted:.1f} nm .*marks empty"
    ):
        read_all(copy, truth)
    shifted = write_enmap_product(region / "enmap.tif", tmp_path / "shifted", seed=1, wavelength_shift_nm=20.0)
    with pytest.raises(RegionError, match=rf"{re.escape(shifted.name)}: no band for the model's \d+\.\d nm"):
        read_all(shifted.path, truth)
    with pytest.raises(
        RegionError, match=r"bands are picked by centre wavelength, and the model's are not known.*--enmap-bands"
    ):
        read_all(product.path, truth, wavelengths=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegionError, match=r"empty: no EnMAP L2A product"):
        MapInputs.from_paths(region / "s2.tif", enmap=tmp_path / "empty")


@pytest.fixture(scope="module")
def stats() -> NormStats:
    rng = np.random.default_rng(0)
    return NormStats(
        rng.uniform(500, 1500, 10), rng.uniform(100, 300, 10), rng.uniform(500, 1500, 218), rng.uniform(100, 300, 218)
    )


def reader_for(region, enmap, stats, **kwargs):
    inputs = MapInputs.from_paths(region / "s2.tif", enmap=enmap, prior=region / "prior.tif", **kwargs)
    return RegionReader(inputs, "jun", ("s2", "enmap", "prior"), stats, s2_bands=10, enmap_bands=218, factor=3)


def test_the_region_reader_reads_a_product_as_the_regions_enmap_tif_within_its_masks(products, region, stats):
    product = products[0]
    cloudy = np.repeat(np.repeat(flagged(product), 3, 0), 3, 1)  # at 10 m
    from_tif, from_product = reader_for(region, region / "enmap.tif", stats), reader_for(region, product.path, stats)
    try:
        for tile in TileGrid(*from_tif.shape, tile=96, margin=8).tiles():
            a, b = from_tif.read(tile), from_product.read(tile)
            under = cloudy[tile.row : tile.row + tile.size, tile.col : tile.col + tile.size]
            np.testing.assert_array_equal(b["valid"], a["valid"] & ~under)
            clear = ~under[::3, ::3]
            np.testing.assert_array_equal(b["enmap"][:, clear], a["enmap"][:, clear])
            assert (b["enmap"][:, ~clear] == 0).all(), "flagged pixels are no data: z-score 0"
            np.testing.assert_array_equal(b["s2"], a["s2"])
    finally:
        from_tif.close()
        from_product.close()
    with pytest.raises(RegionError, match=r"picked by centre wavelength; --enmap-bands picks bands of a plain GeoTIFF"):
        reader_for(region, product.path, stats, enmap_bands="1-218")


def test_flagged_pixels_are_masked_before_warping(region, truth, tmp_path):
    """A product in the next UTM zone, warped back with ``average``: no cloud reflectance reaches a pixel."""
    warp_to(region / "enmap.tif", tmp_path / "enmap_32632.tif", "EPSG:32632", 30.0)
    with rasterio.open(tmp_path / "enmap_32632.tif") as src:
        data = src.read()
    product = write_enmap_product(tmp_path / "enmap_32632.tif", tmp_path / "products", seed=2)
    read, source = read_all(product.path, truth)
    clear = data[0][data[0] != -32768]
    with rasterio.open(product_file(product, SPECTRAL_IMAGE)) as src:
        image = src.read(1)
    cloud = image[flagged(product, ("QL_QUALITY_CLOUD.TIF",)) & (image != -32768)]
    assert source["warped"] and cloud.size > 20 and cloud.min() > clear.max() and read.count() > 0.8 * read.size
    assert read[0].max() <= clear.max(), "no cloud reflectance was averaged into a clear pixel"
    assert read[0].min() >= clear.min(), "no value outside the scene was averaged into a pixel"


def test_the_identity_of_a_product_is_its_files_content(products, region, tmp_path):
    product = products[0]
    moved = tmp_path / "moved"
    shutil.copytree(product.path.parent, moved)
    identities = [
        MapInputs.from_paths(region / "s2.tif", enmap=path).identity(("s2", "enmap"))["rasters"]["enmap"]
        for path in (product.path, moved / product.name)
    ]
    assert identities[0] == identities[1], "a moved product is the same input"
    names = {entry["name"].removeprefix(product.name + "-") for entry in identities[0]}
    assert {"METADATA.XML", "SPECTRAL_IMAGE.TIF", *MASK_LAYERS} <= names
    with rasterio.open(moved / product.name / f"{product.name}-QL_QUALITY_HAZE.TIF", "r+") as dst:
        dst.write(np.zeros((1, dst.height, dst.width), np.uint8))
    changed = MapInputs.from_paths(region / "s2.tif", enmap=moved / product.name).identity(("s2", "enmap"))
    assert changed["rasters"]["enmap"] != identities[0], "an edited quality layer is another input"
    zipped = MapInputs.from_paths(region / "s2.tif", enmap=products[1].path).identity(("s2", "enmap"))
    assert [entry["name"] for entry in zipped["rasters"]["enmap"]] == [products[1].path.name]
