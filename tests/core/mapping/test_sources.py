"""Naming a map's inputs: monthly files ordered by the month in their names, band lists, missing files."""

import os
import shutil
from pathlib import Path

import pytest

from h2crop_core.errors import SettingError
from h2crop_core.mapping import MapInputs, RegionError, inputs_from_region
from h2crop_core.mapping.region import MANIFEST, REGION_FILES, read_manifest
from h2crop_core.mapping.sources import month_in_name, parse_band_list


@pytest.mark.parametrize(
    "name, month",
    [
        ("S2_2023-03.tif", 3),
        ("s2_202311.tif", 11),
        ("T31UGQ_20230715_composite.tif", 7),
        ("march.tif", 3),
        ("S2_Sep.tif", 9),
        ("m02.tif", 2),
        ("S2_T31UGQ_2022_12.tif", 12),
        ("month_1.tif", 1),
        ("tile12_m03.tif", 3),
    ],
)
def test_the_month_is_read_from_the_name(name, month):
    assert month_in_name(Path(name)) == month


@pytest.mark.parametrize(
    "name, message",
    [("s2_composite.tif", "no month in the name"), ("s2_06_m03.tif", r"more than one month \(\[3, 6\]\)")],
)
def test_names_without_one_month_are_refused(name, message):
    with pytest.raises(RegionError, match=message):
        month_in_name(Path(name))


def test_a_monthly_folder_is_ordered_by_month_and_duplicates_are_refused(tmp_path):
    for name in ("S2_2023-10.tif", "S2_2023-02.tif", "S2_2023-01.tif", "notes.txt", ".S2_2023-05.tif.abc.partial"):
        (tmp_path / name).write_bytes(b"")
    inputs = MapInputs.from_paths(tmp_path)
    assert [Path(p).name for p in inputs.s2] == ["S2_2023-01.tif", "S2_2023-02.tif", "S2_2023-10.tif"]
    assert inputs.s2_months == (1, 2, 10)
    (tmp_path / "s2_feb.tif").write_bytes(b"")
    with pytest.raises(RegionError, match="month 2 is also"):
        MapInputs.from_paths(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegionError, match="empty: no GeoTIFFs"):
        MapInputs.from_paths(empty)


def test_band_lists():
    assert parse_band_list("1-3,7, 9-10") == (1, 2, 3, 7, 9, 10)
    assert len(parse_band_list("1-126,131-222")) == 218
    for bad in ("0-4", "5-3", "a", "1-3,2"):
        with pytest.raises(SettingError, match="enmap_bands"):
            parse_band_list(bad)


def test_missing_inputs_are_named(tmp_path):
    (tmp_path / "s2.tif").write_bytes(b"")
    with pytest.raises(RegionError, match=r"nope\.tif: no such file \(the --enmap input\)"):
        MapInputs.from_paths(tmp_path / "s2.tif", tmp_path / "nope.tif")
    with pytest.raises(RegionError, match=r"s2_missing\.tif: no such file \(the --s2 input\)"):
        MapInputs.from_paths(tmp_path / "s2_missing.tif")


def test_a_region_names_its_rasters_and_its_identity_follows_content_not_path(synth_root, tmp_path):
    region = synth_root / "region"
    assert read_manifest(region)["files"] == REGION_FILES
    assert {p.name for p in region.iterdir()} >= {MANIFEST, "parcels.gpkg", *REGION_FILES.values()}
    inputs = inputs_from_region(region)
    assert inputs == MapInputs((str(region / "s2.tif"),), (), str(region / "enmap.tif"), str(region / "prior.tif"))
    assert MapInputs.from_dict(inputs.to_dict()) == inputs
    modalities = ("s2", "enmap", "prior")
    identity = inputs.identity(modalities)
    assert set(identity["rasters"]) == set(modalities) and inputs.identity(("s2",))["rasters"].keys() == {"s2"}
    moved = Path(shutil.copytree(region, tmp_path / "moved", copy_function=shutil.copy2))  # same bytes and times
    assert inputs_from_region(moved).identity(modalities) == identity
    stat = (moved / "prior.tif").stat()
    os.utime(moved / "prior.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: the same content
    assert inputs_from_region(moved).identity(modalities) == identity
    data = bytearray((moved / "prior.tif").read_bytes())
    data[-1] ^= 0xFF  # one byte of content changed, size kept
    (moved / "prior.tif").write_bytes(bytes(data))
    changed = inputs_from_region(moved).identity(modalities)["rasters"]["prior"]
    assert changed != identity["rasters"]["prior"] and changed[0]["bytes"] == identity["rasters"]["prior"][0]["bytes"]

    (moved / "region.json").unlink()
    with pytest.raises(RegionError, match="region.json: missing"):
        inputs_from_region(moved)


def test_input_digests_are_cached_by_size_and_time_and_recomputed_when_either_changes(tmp_path):
    from h2crop_core.files import cached_digest, file_digest

    path = tmp_path / "a.tif"
    path.write_bytes(b"x" * 1000)
    cache: dict = {}
    assert cached_digest(path, cache) == file_digest(path) and len(cache) == 1
    cache[str(path.resolve())]["sha256"] = "stale"  # what a cached entry returns while the file is unchanged
    assert cached_digest(path, cache) == "stale"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached_digest(path, cache) == file_digest(path)  # touched: read again
