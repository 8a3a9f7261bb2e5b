"""The PROSAIL world (``world="prosail"``): its spectra are PROSAIL's through the sensors' band responses,
behave like canopies, keep the benchmark's structure (coarse classes apart, faint siblings that only EnMAP
separates), and leave the drawn world as it was."""

import hashlib

import h5py
import numpy as np
import pytest

from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import SyntheticWorld, generate_taxonomy, synthesize_dataset
from h2crop_core.data.synth.canopy import ENMAP_MONTH
from h2crop_core.data.synth.phenology import PROSAIL_INPUTS
from h2crop_core.errors import SettingError
from h2crop_core.products.wavelengths import BENCHMARK_BANDS, BENCHMARK_ENMAP_NM

SMALL = SampleSpec(size=96)
#: Sentinel-2A central wavelengths and bandwidths (nm), B2..B12 in the model's order (ESA's handbook), written
#: out again here so that the band responses are recomputed independently of the code under test
S2A = ((492.4, 66), (559.8, 36), (664.6, 31), (704.1, 15), (740.5, 15), (782.8, 20), (832.8, 106), (864.7, 21),
       (1613.7, 91), (2202.4, 175))  # fmt: skip
ANNUALS = ("winter_cereal", "summer_crop", "winter_oilseed", "spring_crop", "root_crop", "vegetable")


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    """A PROSAIL world of 30 classes (4 level-1, 4 faint sibling groups), shared by the module's tests."""
    return SyntheticWorld.create(generate_taxonomy((4, 10, 20, 30), seed=1), SMALL, seed=1, kind="prosail")


def _gaussians(centres, fwhm) -> np.ndarray:
    wavelengths = np.arange(400, 2501)
    response = np.exp(-4 * np.log(2) * ((wavelengths - np.array(centres)[:, None]) / np.array(fwhm)[:, None]) ** 2)
    return response / response.sum(1, keepdims=True)


def _band(wavelength: float) -> int:
    return int(np.argmin(np.abs(np.array(BENCHMARK_ENMAP_NM) - wavelength)))


def _ndvi(s2: np.ndarray) -> np.ndarray:
    return (s2[..., 6] - s2[..., 2]) / (s2[..., 6] + s2[..., 2])


def test_a_class_spectrum_is_prosail_through_the_band_responses(world):
    import prosail

    from h2crop_core.data.synth.responses import S2A_BANDS
    from h2crop_core.products.sentinel2 import MODEL_BANDS

    assert [band[1:] for band in S2A_BANDS] == list(S2A) and [band[0] for band in S2A_BANDS] == list(MODEL_BANDS)

    s2_bands = _gaussians([c for c, _ in S2A], [w for _, w in S2A])
    enmap_bands = _gaussians(BENCHMARK_ENMAP_NM, [6.5 if band <= 91 else 10.0 for band in BENCHMARK_BANDS])
    lai = world.canopy.inputs[..., PROSAIL_INPUTS.index("lai")]
    bare = tuple(np.argwhere(lai[1:] == 0)[0] + (1, 0, 0))  # a bare field: PROSAIL's soil
    for leaf, variant, month in ((5, 3, ENMAP_MONTH), (17, 0, 9), bare):
        inputs = dict(zip(PROSAIL_INPUTS, world.canopy.inputs[leaf, variant, month]))
        spectrum = prosail.run_prosail(**inputs, tts=30, tto=5, psi=145, prospect_version="D", typelidf=2)
        np.testing.assert_allclose(world.s2_variants[leaf, variant, month], s2_bands @ spectrum, rtol=1e-9)
        if month == ENMAP_MONTH:
            np.testing.assert_allclose(world.enmap_variants[leaf, variant], enmap_bands @ spectrum, rtol=1e-9)


def test_canopies_are_green_in_season_bare_out_of_it_with_a_red_edge_and_water_dips(world):
    inputs, crops = world.canopy.inputs, world.canopy.crop_type
    lai = inputs[..., PROSAIL_INPUTS.index("lai")]  # (classes, variants, months)
    annual = [leaf for leaf in range(1, len(crops)) if crops[leaf] in ANNUALS]
    assert len(annual) >= 3
    ndvi = _ndvi(world.s2_variants)
    for leaf in annual:
        peak = ndvi[leaf].mean(0).argmax()  # the greenest month
        assert lai[leaf, :, peak].min() > 1.5 and ndvi[leaf, :, peak].min() > 0.8
        assert lai[leaf].mean(0).min() < 0.5  # some time between harvest and the next crop
    bare = lai[annual] == 0
    assert bare.sum() > 20 and ndvi[annual][bare].max() < 0.3  # bare soil (or stubble) between crops
    assert ndvi[0].max() < 0.35  # the background is bright ground, nearly bare all year
    cab = inputs[..., PROSAIL_INPUTS.index("cab")]
    in_june = (lai[:, :, ENMAP_MONTH].min(1) > 2) & (cab[:, :, ENMAP_MONTH].min(1) > 25)
    green = np.flatnonzero(in_june[1:]) + 1  # a dense green canopy at the acquisition
    assert len(green) > 5
    spectra = world.enmap_variants[green].mean(1)  # canopy reflectance, before the atmosphere
    wavelengths = np.array(BENCHMARK_ENMAP_NM)
    edge = np.flatnonzero((wavelengths > 680) & (wavelengths < 760))
    slope = np.diff(spectra[:, edge], axis=1) / np.diff(wavelengths[edge])
    red_edge = (wavelengths[edge][:-1] + wavelengths[edge][1:])[slope.argmax(1)] / 2
    assert ((red_edge > 700) & (red_edge < 735)).all(), red_edge
    # leaf water: dips at 970, 1200, 1450 and 1940 nm (the last two sharpened by the atmosphere later)
    at = {w: spectra[:, _band(w)] for w in (900, 975, 1070, 1200, 1280, 1319, 1461, 1650, 1939, 2200)}
    assert (at[975] < (at[900] + at[1070]) / 2).all() and (at[1200] < (at[1070] + at[1280]) / 2).all()
    assert (at[1461] < 0.7 * at[1319]).all() and (at[1461] < 0.7 * at[1650]).all()
    assert (at[1939] < 0.6 * at[2200]).all()
    assert world.transmission.min() < 0.2  # the atmosphere is still applied on rendering, as in a drawn world


def test_faint_siblings_look_alike_in_s2_and_apart_in_enmap(world):
    """A faint group's members differ little in S2 (less than other siblings do) and more in EnMAP; a
    nearest-centroid classifier on rendered pixels (parcels split in two) tells them apart from EnMAP, hardly
    from the S2 time series (chance is 0.5 or 0.33 here)."""
    paths = world.taxonomy.paths
    assert len(world.faint_groups) >= 2 and 0 < world.s2_confused.sum() < len(paths) - 1
    gaps = {True: [], False: []}  # faint? -> (S2, EnMAP) largest difference between two members' signatures
    accuracy = []  # faint groups' (S2, EnMAP) accuracy
    for k in (2, 3):
        for parent in np.unique(paths[1:, k - 1]):
            members = np.unique(paths[1:, k][paths[1:, k - 1] == parent])
            leaves = [int(np.flatnonzero(paths[:, k] == member)[0]) for member in members]
            faint = (k, parent) in world.faint_groups
            if len(leaves) < 2 or (not faint and world.s2_confused[leaves[0]]):
                continue
            difference = [
                np.abs(x[leaves[0]] - x[leaves[1]]).max() for x in (world.s2_signature, world.enmap_signature)
            ]
            gaps[faint].append(difference)
            if faint:
                s2, enmap, truth, parcel = _pure_pixels(world, leaves)
                accuracy.append((_centroid_accuracy(s2, truth, parcel), _centroid_accuracy(enmap, truth, parcel)))
    faint, distinct = np.median(gaps[True], axis=0), np.median(gaps[False], axis=0)
    assert faint[0] < 0.3 * distinct[0] and faint[1] > 2.5 * faint[0], (faint, distinct)
    s2_accuracy, enmap_accuracy = np.array(accuracy).T
    assert (enmap_accuracy > 0.9).all() and (s2_accuracy < 0.65).all(), accuracy


def _pure_pixels(world: SyntheticWorld, leaves: list[int], scenes: int = 3, size: int = 192):
    """S2 (at the centre) and EnMAP of every 30 m pixel inside one parcel, from scenes of only ``leaves``."""
    rng = np.random.default_rng(0)
    s2_rows, enmap_rows, truth, parcels = [], [], [], []
    n = size // 3
    for s in range(scenes):
        scene = world.scene(size, size, rng)
        scene["seed"] = s
        scene["parcel_leaf"][1:] = rng.choice(leaves, len(scene["parcel_leaf"]) - 1)
        s2, enmap = world.render(scene, slice(None), rng)
        blocks = scene["parcel"].reshape(n, 3, n, 3).transpose(0, 2, 1, 3).reshape(n * n, 9)
        pure = (blocks == blocks[:, :1]).all(1) & (blocks[:, 0] > 0)
        s2_rows.append(s2[:, :, 1::3, 1::3].reshape(-1, n * n).T[pure])
        enmap_rows.append(enmap.reshape(len(enmap), -1).T[pure])
        truth.append(scene["parcel_leaf"][blocks[pure, 0]])
        parcels.append(blocks[pure, 0] * scenes + s)
    return (np.concatenate(x).astype(float) for x in (s2_rows, enmap_rows, truth, parcels))


def _centroid_accuracy(x: np.ndarray, truth: np.ndarray, parcel: np.ndarray) -> float:
    """Nearest centroid after whitening by the pooled within-class covariance (shrunk a little): what a linear
    model makes of the features. Trained on the even parcels, scored on the odd ones."""
    train = parcel % 2 == 0
    classes = np.unique(truth)
    centroids = np.stack([x[train & (truth == c)].mean(0) for c in classes])
    within = np.cov((x[train] - centroids[np.searchsorted(classes, truth[train])]).T)
    within = 0.9 * within + 0.1 * np.trace(within) / len(within) * np.eye(len(within))
    whiten = np.linalg.cholesky(np.linalg.inv(within))
    z, centroids = x @ whiten, centroids @ whiten
    predicted = classes[((z[~train, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((predicted == truth[~train]).mean())


def test_coarse_classes_differ_more_than_fine(world):
    """Between two leaves whose paths part at level k, the mean S2 distance shrinks with k from level 2 on,
    and level-1 families lie further apart than level-3 siblings. (Level 1 against level 2 is not a rule:
    an arable family's level-2 classes are crop types, and a winter cereal and a maize differ as much as
    grassland and an orchard.)"""
    paths = world.taxonomy.paths[1:]
    parted = np.argmax(paths[:, None] != paths[None], axis=-1)
    different = ~(paths[:, None] == paths[None]).all(-1)
    s2 = world.s2_signature[1:].reshape(len(paths), -1)
    distance = np.sqrt(((s2[:, None] - s2[None]) ** 2).mean(-1))
    mean = [distance[(parted == k) & different].mean() for k in range(4)]
    assert mean[1] > mean[2] > mean[3] and mean[0] > 2 * mean[2], mean


def test_a_parcel_mixes_its_class_spectra_with_the_same_weights_all_year(world):
    rng = np.random.default_rng(3)
    leaves = np.array([0, 4, 4, 4, 9])
    s2, enmap = world._parcel_spectra(leaves, rng)
    variants = world.s2_variants[4].reshape(world.s2_variants.shape[1], -1)  # (variants, months × bands)
    for p in (1, 2, 3):
        weights = np.linalg.lstsq(variants.T, s2[p].ravel(), rcond=None)[0]
        assert abs(weights.sum() - 1) < 1e-6 and weights.min() > -1e-6
        np.testing.assert_allclose(enmap[p], weights @ world.enmap_variants[4], atol=1e-9)
    assert np.abs(s2[1] - s2[2]).max() > 1e-3  # two fields of one class differ


def test_the_prosail_world_is_a_function_of_taxonomy_and_seed():
    taxonomy = generate_taxonomy((2, 3, 3, 4), seed=2)
    a, b, c = (SyntheticWorld.create(taxonomy, SMALL, seed=s, kind="prosail") for s in (4, 4, 5))
    for name in ("s2_variants", "enmap_variants", "frequency", "predecessor"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.s2_variants, c.s2_variants)
    assert a.canopy.family == ("background", "arable", "grassland")


def test_the_drawn_world_is_unchanged_by_the_prosail_one(tmp_path):
    """Samples of the drawn world (the default) keep the arrays they had before worlds had kinds and
    variants: the digest was taken with that code."""
    synthesize_dataset(tmp_path, 3, seed=3, spec=SMALL, region_size=None, progress=False)
    digest = hashlib.sha256()
    for path in sorted((tmp_path / "h5_data").glob("*.h5")):
        with h5py.File(path) as handle:
            for key in sorted(handle):
                digest.update(key.encode() + np.ascontiguousarray(handle[key][()]).tobytes())
    assert digest.hexdigest() == "5fc5f867ad8635bde2c6177bfeed1389f898406a8b3327d1027490320c1b1dc1"
    assert SyntheticWorld.create(generate_taxonomy((2, 3, 3, 4)), SMALL).s2_variants.shape[1] == 1


def test_a_world_of_another_kind_is_refused_in_one_line(tmp_path):
    taxonomy = generate_taxonomy((2, 3, 3, 4))
    with pytest.raises(SettingError, match=r"^world must be one of drawn, prosail; got 'leaf'$"):
        SyntheticWorld.create(taxonomy, SMALL, kind="leaf")
    with pytest.raises(SettingError, match="world must be one of drawn, prosail"):
        synthesize_dataset(tmp_path / "d", 1, spec=SMALL, region_size=None, progress=False, world="PROSAIL")
    assert not (tmp_path / "d").exists()
    with pytest.raises(SettingError, match="benchmark's bands"):
        SyntheticWorld.create(taxonomy, SampleSpec(size=96, enmap_bands=50), kind="prosail")


def test_the_quicklook_draws_either_world_and_rewrites_nothing_unchanged(tmp_path, world):
    from h2crop_core.data.synth.quicklook import world_quicklook

    path = world_quicklook(world, tmp_path / "world.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = path.stat().st_mtime_ns
    world_quicklook(world, path)
    assert path.stat().st_mtime_ns == before
    drawn = SyntheticWorld.create(world.taxonomy, SMALL, seed=1)
    assert world_quicklook(drawn, tmp_path / "drawn.png").stat().st_size > 10_000
