"""``h2crop prepare`` on the generated region: samples whose labels and priors are the region's own, provenance
attributes, a report of unknown codes, refusals, and a killed and resumed run equal to an uninterrupted one."""

import json
import re

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.validate import validate_dataset
from pipelines.cli.main import main
from tests.pipelines.conftest import kill_cli_when

#: what differs between two runs of the same dataset: when and how it ran
RUN_FIELDS = ("seconds", "seconds_per_km2", "driver_peak_rss_mb", "blocks_scanned", "blocks_cut", "settings")


def prepare_argv(region, output, *extra):
    return [
        "prepare", "--quiet", "--s2", region / "s2.tif", "--enmap", region / "enmap.tif",
        "--parcels", region / "parcels.gpkg", "--code-column", "CODE_CULTU", "--crosswalk", region / "crosswalk.csv",
        "--prior-parcels", region / "parcels_prior.gpkg", "--taxonomy", region.parent / "cascade_labels.csv",
        "--output", output, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(synth_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("prepared") / "data"
    argv = prepare_argv(synth_root / "region", output, "--tile", "48", "--block", "0.48", "--no-ray")
    assert main([str(a) for a in argv]) == 0
    return output


def test_prepared_samples_hold_the_regions_labels_priors_and_provenance(prepared, synth_root, synth_taxonomy):
    region = synth_root / "region"
    report = json.loads((prepared / "prepare.json").read_text())
    assert validate_dataset(prepared, taxonomy=synth_taxonomy, progress=False).ok
    lists = {s: DatasetIndex(prepared).split_names(s) for s in ("train", "val", "test")}
    assert sum(map(len, lists.values())) == len(report["samples"]) == sum(report["tiles"]["written"].values())
    assert not set(lists["train"]) & (set(lists["val"]) | set(lists["test"]))
    with rasterio.open(region / "label.tif") as src:
        truth, crs = src.read(), src.crs
    with rasterio.open(region / "prior.tif") as src:
        prior_truth = src.read()
    for name, entry in report["samples"].items():
        with h5py.File(prepared / "h5_data" / f"{name}.h5") as handle:
            label, prior, attrs = handle["label"][...], handle["priors"][...], dict(handle.attrs)
            s2 = handle["S2_data"][...]
        col, row = int(name.split("_x")[1][:6]), int(name.split("_y")[1][:6])
        window = np.s_[:, row : row + 48, col : col + 48]
        assert attrs["crs"] == crs.to_string() and list(attrs["bounds"]) == entry["bounds"]
        assert entry["bounds"] == list(rasterio.windows.bounds(Window(col, row, 48, 48), src.transform))
        known = label != 255
        np.testing.assert_array_equal(label[known], truth[window][known])
        # unlabelled: undeclared parcels (255 in the truth) and parcels without a code (non-crop land, 0)
        assert set(np.unique(truth[window][~known])) <= {0, 255}
        declared = prior != 255
        np.testing.assert_array_equal(prior[declared], prior_truth[window][declared])
        with rasterio.open(region / "s2.tif") as stack:
            expected = stack.read(window=Window(col, row, 48, 48)).reshape(12, 10, 48, 48)
        np.testing.assert_array_equal(s2, expected)
    unknown = report["crosswalk_coverage"]["unknown"]
    assert unknown["ZZZ"]["parcels"] > 0 and unknown["ZZZ"]["why"] == "not in the crosswalk crosswalk.csv"
    assert json.loads((prepared / "input_contract.json").read_text())["s2_bands"][0] == "B2"
    assert (prepared / "splits.png").stat().st_size > 10_000
    assert report["samples"] and all(entry["split"] in lists for entry in report["samples"].values())


def test_a_finished_dataset_is_kept_and_other_settings_are_refused(prepared, synth_root, capsys):
    region = synth_root / "region"
    argv = prepare_argv(region, prepared, "--tile", "48", "--block", "0.48", "--no-ray")
    before = (prepared / "prepare.json").read_bytes()
    assert main([str(a) for a in argv]) == 0
    assert "this dataset is complete" in capsys.readouterr().out
    assert (prepared / "prepare.json").read_bytes() == before
    assert main([str(a) for a in [*argv, "--erode", "1"]]) == 2
    assert "settings.erode: 0 then, 1 now" in capsys.readouterr().err
    assert main([str(a) for a in prepare_argv(region, prepared / "x", "--code-column", "NOPE")]) == 2
    assert (
        "no column 'NOPE' (--code-column); its columns: parcel_id, level4_id, crop, CODE_CULTU"
        in capsys.readouterr().err
    )


def test_a_killed_and_resumed_prepare_equals_an_uninterrupted_one(synth_root, tmp_path, ray_local, capsys):
    region = synth_root / "region"
    layout = ["--tile", "24", "--block", "0.48", "--erode", "1", "--buffer", "30"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main([str(a) for a in prepare_argv(region, whole, *layout)]) == 0  # blocks as Ray tasks
    cut = resumed / ".prepare" / "cut"
    killed = kill_cli_when(  # blocks in its own process: no Ray workers to start, killed mid-cut
        prepare_argv(region, resumed, *layout, "--no-ray"), ray_local, lambda: len(list(cut.glob("*.json"))) >= 3
    )
    assert killed.returncode == -9
    done = len(list(cut.glob("*.json")))
    assert 3 <= done < 16 and not (resumed / "prepare.json").exists()
    assert main([str(a) for a in prepare_argv(region, resumed, *layout)]) == 0
    assert re.search(rf"resuming the cut: {done} of \d+ blocks already done", capsys.readouterr().out)
    first, second = (json.loads((root / "prepare.json").read_text()) for root in (whole, resumed))
    for field in RUN_FIELDS:
        first.pop(field, None), second.pop(field, None)
    assert first == second
    # no training tile within 30 m of a val or test tile (blocks of 2 x 2 tiles, none skipped for data here)
    blocks = {entry["split"]: [] for entry in first["samples"].values()}
    for entry in first["samples"].values():
        blocks[entry["split"]].append(entry["bounds"])
    assert first["tiles"]["skipped"]["buffer"] > 0
    for train in blocks["train"]:
        for other in blocks["val"] + blocks["test"]:
            gap = max(other[0] - train[2], train[0] - other[2], other[1] - train[3], train[1] - other[3])
            assert gap >= 30, (train, other)
    names = sorted(p.name for p in (whole / "h5_data").glob("*.h5"))
    assert names == sorted(p.name for p in (resumed / "h5_data").glob("*.h5")) and len(names) > 20
    for name in names:
        assert (whole / "h5_data" / name).read_bytes() == (resumed / "h5_data" / name).read_bytes()
    for split in ("train", "val", "test"):
        assert (whole / "data_lists" / f"{split}.txt").read_text() == (
            resumed / "data_lists" / f"{split}.txt"
        ).read_text()
