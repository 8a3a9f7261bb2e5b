"""The input contract: kept in every checkpoint, checked against S2 rasters (band names, convention tag) and
datasets, and the drift warning for inputs that do not look like the training data."""

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch

from h2crop_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.data.stats import compute_norm_stats
from h2crop_core.evaluation import evaluate_checkpoint
from h2crop_core.mapping import MapInputs, RegionError, RegionReader, TileGrid, inputs_from_region
from h2crop_core.mapping.drift import band_shifts, drift_warning, input_drift
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import get_preset
from h2crop_core.products.contract import (
    BENCHMARK_ENMAP_SOURCE,
    CONTRACT_FILE,
    S2_BANDS,
    S2_CONVENTION_TAG,
    ContractError,
    InputContract,
    check_dataset_contract,
    check_s2_inputs,
    contract_for,
    normalise_band_name,
)
from h2crop_core.products.wavelengths import BENCHMARK_ENMAP_NM
from h2crop_core.taxonomy import Taxonomy


@pytest.fixture(scope="module")
def synth_stats(synth_root):
    return compute_norm_stats(DatasetIndex(synth_root).split_paths("train"), progress=False)


@pytest.fixture(scope="module")
def synth_checkpoint(synth_root, synth_stats, tmp_path_factory):
    taxonomy = Taxonomy.from_csv(synth_root / "cascade_labels.csv")
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=taxonomy.num_classes)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("contract") / "model.ckpt"
    return save_checkpoint(path, DualStreamModel(config), config, taxonomy, synth_stats)


def write_s2(path, count=10, descriptions=None, tags=None):
    """A small georeferenced int16 raster with the given band descriptions and tags."""
    profile = dict(driver="GTiff", width=8, height=8, count=count, dtype="int16", crs="EPSG:32631", nodata=-32768)
    profile["transform"] = rasterio.transform.from_origin(600_000, 5_000_000, 10, 10)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((count, 8, 8), 2000, np.int16))
        if descriptions:
            dst.descriptions = tuple(descriptions)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def test_the_benchmark_contract_and_its_round_trips(tmp_path):
    contract = contract_for(H2CROP_SPEC)
    assert contract.s2_bands == S2_BANDS and contract.s2_convention == "l2a-offset-1000"
    assert contract.enmap_wavelengths_nm == BENCHMARK_ENMAP_NM and len(contract.enmap_wavelengths_nm) == 218
    assert contract.enmap_source == BENCHMARK_ENMAP_SOURCE and contract.enmap_convention == "reflectance-x10000"
    # another EnMAP band count: no wavelengths (its bands are read by index); another S2 count: unnamed
    other = contract_for(SampleSpec(s2_bands=12, enmap_bands=50))
    assert other.enmap_wavelengths_nm == () and other.enmap_source == "" and other.s2_bands == ()
    assert InputContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    assert InputContract.from_json(contract.to_json(tmp_path / "c.json")) == contract
    with pytest.raises(ContractError, match=r"x.json: s2_bands \['band3'\] are not S2 band names"):
        InputContract.from_dict({**contract.to_dict(), "s2_bands": ["B2", "band3"]}, source="x.json")
    with pytest.raises(ContractError, match="expected s2_bands"):
        InputContract.from_dict({"s2_convention": "l2a-offset-1000"})


def test_band_names_are_read_from_descriptions():
    named = {"B02": "B2", "b8a": "B8A", "B8A": "B8A", "B11": "B11", "nir08": "B8A", "swir16": "B11"}
    named |= {"T31UDQ_20230615T105031_B02_10m": "B2", "month01_B12": "B12", "B4 red": "B4"}
    for text, name in named.items():
        assert normalise_band_name(text) == name, text
    for text in ("", None, "month01_band03", "band 3", "blue B3", "B13", "B1A", "level1"):
        assert normalise_band_name(text) is None, text


def test_s2_rasters_named_or_tagged_against_the_contract(tmp_path):
    contract = contract_for(H2CROP_SPEC)
    good = write_s2(tmp_path / "good.tif", descriptions=S2_BANDS, tags={S2_CONVENTION_TAG: "l2a-offset-1000"})
    padded = write_s2(tmp_path / "padded.tif", descriptions=[f"B{b[1:].zfill(2)}" for b in S2_BANDS])
    unnamed = write_s2(
        tmp_path / "unnamed.tif", 20, descriptions=[f"month{m:02d}_band{b:02d}" for m in (1, 2) for b in range(1, 11)]
    )
    check_s2_inputs([good, padded, unnamed, write_s2(tmp_path / "bare.tif")], contract)  # all pass

    swapped = list(S2_BANDS)
    swapped[7], swapped[8] = swapped[8], swapped[7]
    wrong = write_s2(tmp_path / "wrong.tif", descriptions=swapped)
    with pytest.raises(RegionError) as refused:
        check_s2_inputs([good, wrong], contract)
    message = str(refused.value)
    assert message.startswith(f"{wrong}: its bands are named ") and "\n" not in message
    assert str(swapped) in message and str(list(S2_BANDS)) in message
    # a stacked file is compared month by month: its second month is out of order
    stacked = write_s2(tmp_path / "stacked.tif", 20, descriptions=list(S2_BANDS) + swapped)
    with pytest.raises(RegionError, match=r"stacked.tif: its bands are named .* \(bands 11-20\)"):
        check_s2_inputs([stacked], contract)
    # a raster tagged with another reflectance convention
    raw = write_s2(tmp_path / "raw.tif", descriptions=S2_BANDS, tags={S2_CONVENTION_TAG: "reflectance"})
    with pytest.raises(RegionError) as refused:
        check_s2_inputs([raw], contract)
    message = str(refused.value)
    assert message.startswith(f"{raw}: tagged h2crop_s2_convention='reflectance'") and "'l2a-offset-1000'" in message
    # a contract without band names (another S2 layout) reads by index, but still checks the tag
    check_s2_inputs([wrong], InputContract(s2_bands=()))


def test_the_checkpoint_keeps_the_contract_and_old_ones_load_without(tmp_path, synth_root, synth_checkpoint):
    loaded = load_checkpoint(synth_checkpoint)
    assert loaded.contract == contract_for(H2CROP_SPEC)  # the default: what the layout implies
    model, config = loaded.model, loaded.config
    custom = InputContract(enmap_wavelengths_nm=tuple(w + 0.5 for w in BENCHMARK_ENMAP_NM), enmap_source="a product")
    path = save_checkpoint(tmp_path / "c.ckpt", model, config, loaded.taxonomy, loaded.stats, contract=custom)
    assert load_checkpoint(path).contract == custom
    # a checkpoint written before contracts: loads with none, and maps by index as before
    payload = torch.load(synth_checkpoint, weights_only=True)
    del payload["input_contract"]
    torch.save(payload, tmp_path / "old.ckpt")
    old = load_checkpoint(tmp_path / "old.ckpt")
    assert old.contract is None
    inputs = inputs_from_region(synth_root / "region")
    reader = RegionReader(
        inputs,
        config.window,
        config.input_keys,
        old.stats,
        s2_bands=10,
        enmap_bands=218,
        factor=3,
        enmap_wavelengths=None,
    )
    tile = TileGrid(*reader.shape, tile=96, margin=8).tiles()[0]
    assert reader.read(tile)["enmap"].shape == (218, 32, 32)
    payload["input_contract"] = {"s2_bands": "B2"}
    torch.save(payload, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bad.ckpt \(input_contract\): expected"):
        load_checkpoint(tmp_path / "bad.ckpt")


def test_synth_writes_a_contract_and_evaluate_refuses_another(tmp_path, synth_root, synth_checkpoint):
    assert InputContract.from_json(synth_root / CONTRACT_FILE) == contract_for(H2CROP_SPEC)
    loaded = load_checkpoint(synth_checkpoint)
    check_dataset_contract(synth_root, loaded.contract, synth_checkpoint)  # the same: passes
    check_dataset_contract(synth_root, None, synth_checkpoint)  # an old checkpoint: nothing to compare
    root = tmp_path / "data"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("region"))
    test_list = root / "data_lists" / "test.txt"
    test_list.write_text(test_list.read_text().splitlines()[0] + "\n")  # one sample: the test is about the contract
    other = InputContract(s2_convention="reflectance", enmap_wavelengths_nm=tuple(w + 5 for w in BENCHMARK_ENMAP_NM))
    other.to_json(root / CONTRACT_FILE)
    with pytest.raises(ContractError) as refused:
        evaluate_checkpoint(synth_checkpoint, root, "test", progress=False)
    message = str(refused.value)
    assert message.startswith(f"{root / CONTRACT_FILE}: the dataset's inputs are not what {synth_checkpoint}")
    assert "S2 convention 'l2a-offset-1000' vs 'reflectance'" in message and "\n" not in message
    first = BENCHMARK_ENMAP_NM[0]
    assert f"EnMAP band wavelengths at 218 band(s), the first band 1: {first:g} vs {first + 5:g} nm" in message
    (root / CONTRACT_FILE).unlink()  # a dataset without a contract passes, and the report names the checkpoint's
    evaluation = evaluate_checkpoint(synth_checkpoint, root, "test", loader_workers=0, progress=False)
    assert evaluation.extra["input_contract"] == loaded.contract.to_dict()


def variant(inputs, folder, s2=lambda x: x, enmap=lambda x: x) -> MapInputs:
    """The region's S2 and EnMAP with their values changed (float32, no nodata: the change is all)."""
    folder.mkdir()
    changed = {}
    for key, change, source in (("s2", s2, inputs.s2[0]), ("enmap", enmap, inputs.enmap)):
        with rasterio.open(source) as src:
            profile, data = {**src.profile, "dtype": "float32", "nodata": None}, src.read().astype(np.float32)
        with rasterio.open(folder / f"{key}.tif", "w", **profile) as dst:
            dst.write(change(data))
        changed[key] = str(folder / f"{key}.tif")
    return MapInputs(**{**inputs.__dict__, "s2": (changed["s2"],), "enmap": changed["enmap"]})


def test_the_drift_check_warns_on_an_offset_and_a_scale_not_on_clean_inputs(synth_root, synth_stats, tmp_path):
    inputs = inputs_from_region(synth_root / "region")
    cases = {
        "clean": variant(inputs, tmp_path / "clean"),
        "offset": variant(inputs, tmp_path / "offset", s2=lambda x: x - 1000),  # never harmonised
        "scale": variant(inputs, tmp_path / "scale", s2=lambda x: (x - 1000) / 1e4, enmap=lambda x: x / 1e4),
    }
    found = {}
    for name, case in cases.items():
        reader = RegionReader(case, "dec", ("s2", "enmap"), synth_stats, s2_bands=10, enmap_bands=218, factor=3)
        tiles = TileGrid(*reader.shape, tile=96, margin=8).tiles()
        found[name] = input_drift(reader, tiles, synth_stats, contract_for(H2CROP_SPEC), 0.75)
        assert input_drift(reader, tiles, synth_stats, None, 0) is None  # 0: no check
        reader.close()
    assert found["clean"] is None
    assert "S2 B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 (-1." in found["offset"] and "EnMAP" not in found["offset"]
    assert "an unharmonised L2A offset of 1000" in found["offset"] and "\n" not in found["offset"]
    assert "EnMAP bands 1-" in found["scale"] and found["scale"].count("a 0-1 reflectance scale") == 2


def test_drift_on_arrays_names_bands_and_causes():
    rng = np.random.default_rng(0)
    stats = NormStats(np.full(10, 3000.0), np.full(10, 800.0), np.full(5, 2000.0), np.full(5, 500.0))
    s2 = np.ma.masked_array(rng.normal(3000, 800, (10, 5000)))
    enmap = np.ma.masked_array(rng.normal(2000, 500, (5, 5000)))
    raw, shift = band_shifts(s2, stats.s2_mean, stats.s2_std)
    assert np.allclose(raw, 3000, atol=50) and np.all(np.abs(shift) < 0.1)
    assert drift_warning(s2, enmap, stats) is None
    data = s2.data.copy()
    data[:, :100] = -32768
    assert drift_warning(np.ma.masked_equal(data, -32768), enmap, stats) is None  # nodata (masked) never counts
    assert drift_warning(s2, enmap, stats) is None
    doubled = drift_warning(s2, enmap * 3, stats)  # another scale, EnMAP only, bands numbered
    assert doubled.startswith("the inputs do not look like") and "EnMAP bands 1-5 (+8.0 std" in doubled
    assert "another scale or offset (input means 3x the statistics'" in doubled and "S2" not in doubled
