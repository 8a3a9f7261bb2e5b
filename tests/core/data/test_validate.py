import shutil

import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleError, infer_dataset_spec
from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.data.synth import synthesize_dataset
from h2crop_core.data.validate import validate_dataset
from h2crop_core.taxonomy import Taxonomy

SMALL = SampleSpec(size=96)


@pytest.fixture()
def small_root(tmp_path):
    """A 5-sample dataset of 96-pixel tiles (not the benchmark's 192)."""
    return synthesize_dataset(tmp_path / "small", 5, seed=4, spec=SMALL, region_size=None, progress=False).root


def test_a_dataset_of_another_tile_size_validates_without_a_spec(small_root):
    taxonomy = Taxonomy.from_csv(small_root / "cascade_labels.csv")
    report = validate_dataset(small_root, taxonomy=taxonomy, progress=False)
    assert report.ok and report.good == report.checked == 5
    assert validate_dataset(small_root, "train", progress=False).ok


def test_a_misshaped_file_among_small_tiles_is_still_caught(small_root, synth_root):
    victim = DatasetIndex(small_root).split_paths("test")[0]
    shutil.copyfile(DatasetIndex(synth_root).all_paths()[0], victim)  # a 192-pixel sample under a 96-pixel name
    report = validate_dataset(small_root, progress=False)
    assert (report.checked, report.good) == (5, 4)
    [bad] = report.bad
    assert (
        bad["path"] == str(victim)
        and bad["expected"] == "shape (12, 10, 96, 96)"
        and bad["found"] == "shape (12, 10, 192, 192)"
    )


def test_a_dataset_whose_files_are_all_unreadable_reports_every_file(small_root):
    for path in DatasetIndex(small_root).all_paths():
        path.write_bytes(b"not hdf5")
    report = validate_dataset(small_root, progress=False)
    assert report.checked == 5 and report.good == 0 and all("readable HDF5 file" in b["expected"] for b in report.bad)


def test_the_most_common_layout_wins_and_bad_files_are_skipped(small_root, synth_root, tmp_path):
    paths = DatasetIndex(small_root).all_paths()
    assert infer_dataset_spec(paths) == SMALL
    big = DatasetIndex(synth_root).all_paths()
    assert infer_dataset_spec([big[0], *paths]) == SMALL  # the first file does not decide
    assert infer_dataset_spec(big[:2] + paths[:1]) == H2CROP_SPEC
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    assert infer_dataset_spec([junk, *paths]) == SMALL
    with pytest.raises(SampleError, match="junk.h5.*readable HDF5 file") as info:
        infer_dataset_spec([junk, tmp_path / "absent.h5"])
    assert info.value.path == str(junk)  # the first file's error
