from pathlib import Path

import h5py
import numpy as np
import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import SampleError, SampleReader, read_sample
from h2crop_core.data.schema import KEY_SPELLINGS, window_months
from h2crop_core.data.synth import synthesize_dataset


def _first(root: Path, split: str = "train") -> Path:
    return DatasetIndex(root).split_paths(split)[0]


def _rewrite(path: Path, key: str, value: np.ndarray) -> None:
    with h5py.File(path, "a") as handle:
        del handle[key]
        handle.create_dataset(key, data=value)


def test_both_key_spellings_read_back_identical_samples(tmp_path):
    files = synthesize_dataset(tmp_path / "files", 3, seed=7, key_style="files", region_size=None, progress=False)
    readme = synthesize_dataset(tmp_path / "readme", 3, seed=7, key_style="readme", region_size=None, progress=False)
    assert files.splits == readme.splits
    for name in files.splits["train"] + files.splits["test"]:
        a_path, b_path = files.root / "h5_data" / f"{name}.h5", readme.root / "h5_data" / f"{name}.h5"
        with h5py.File(a_path) as a, h5py.File(b_path) as b:
            assert set(a) == {"S2_data", "EnMAP_data", "label", "priors"}
            assert set(b) == {"S2", "EnMAP", "label", "prior"}
        sample_a, sample_b = read_sample(a_path), read_sample(b_path)
        assert sample_a.keys() == sample_b.keys() == {"name", "s2", "enmap", "label", "prior"}
        for key in ("s2", "enmap", "label", "prior"):
            np.testing.assert_array_equal(sample_a[key], sample_b[key])


@pytest.mark.parametrize("window, months", [("jun", 6), ("aug", 8), ("oct", 10), ("dec", 12), (3, 3), ("7", 7)])
def test_window_reads_the_first_months(synth_root, window, months):
    path = _first(synth_root)
    full = read_sample(path, "dec", ["s2"])
    sample = read_sample(path, window, ["s2"])
    assert sample["s2"].shape == (months, 10, 192, 192) and sample["s2"].dtype == np.int16
    np.testing.assert_array_equal(sample["s2"], full["s2"][:months])


def test_bad_windows_are_rejected():
    for bad in ("july", 0, 13, None):
        with pytest.raises(ValueError, match="window"):
            window_months(bad)


def test_only_the_modalities_asked_for_are_read(synth_root):
    sample = read_sample(_first(synth_root), "jun", ["s2", "label"])
    assert set(sample) == {"name", "s2", "label"}
    with pytest.raises(ValueError, match="unknown modalities"):
        SampleReader(modalities=("s2", "hyperspectral"))


def test_unlabelled_255_is_kept(synth_root, synth_taxonomy):
    labels = [
        read_sample(p, modalities=["label"], taxonomy=synth_taxonomy)["label"]
        for p in DatasetIndex(synth_root).all_paths()
    ]
    assert any((label == 255).any() for label in labels)
    assert all(label.dtype == np.uint8 and label.shape == (4, 192, 192) for label in labels)


def test_normalisation_z_scores_with_the_given_stats(synth_root):
    path = _first(synth_root)
    raw = read_sample(path, "jun", ["s2", "enmap"])
    stats = NormStats(np.arange(10) * 100.0, np.full(10, 50.0), np.full(218, 7.0), np.linspace(1, 2, 218))
    normed = read_sample(path, "jun", ["s2", "enmap"], stats=stats)
    assert normed["s2"].dtype == np.float32 and normed["enmap"].dtype == np.float32
    expected = (raw["s2"].astype(np.float64) - stats.s2_mean[None, :, None, None]) / 50.0
    np.testing.assert_allclose(normed["s2"], expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        normed["enmap"], (raw["enmap"] - 7.0) / stats.enmap_std[:, None, None], rtol=1e-5, atol=1e-3
    )


# ------------------------------------------------------------------------------------------- bad input
def test_missing_key_names_file_key_and_found_keys(writable_root):
    path = _first(writable_root)
    with h5py.File(path, "a") as handle:
        del handle["EnMAP_data"]
    with pytest.raises(SampleError) as info:
        read_sample(path)
    error = info.value
    assert error.path == str(path) and error.key == "EnMAP_data"
    assert "'EnMAP_data' or 'EnMAP'" in str(error) and "S2_data" in error.found
    # without EnMAP the rest still reads
    assert read_sample(path, modalities=["s2", "label", "prior"])["s2"].shape[0] == 12


@pytest.mark.parametrize(
    "key, value, expected, found",
    [
        ("S2_data", np.zeros((12, 10, 96, 96), np.int16), "shape (12, 10, 192, 192)", "shape (12, 10, 96, 96)"),
        ("S2_data", np.zeros((6, 10, 192, 192), np.int16), "shape (12, 10, 192, 192)", "shape (6, 10, 192, 192)"),
        ("EnMAP_data", np.zeros((218, 64, 64), np.float32), "dtype int16", "dtype float32"),
        ("label", np.zeros((4, 192, 192), np.int64), "dtype uint8", "dtype int64"),
        ("priors", np.zeros((3, 192, 192), np.uint8), "shape (4, 192, 192)", "shape (3, 192, 192)"),
    ],
)
def test_wrong_shape_or_dtype_is_named(writable_root, key, value, expected, found):
    path = _first(writable_root)
    _rewrite(path, key, value)
    with pytest.raises(SampleError) as info:
        read_sample(path)
    assert info.value.key == key and info.value.expected == expected and info.value.found == found
    assert str(path) in str(info.value)


def test_labels_beyond_the_taxonomy_are_rejected(writable_root):
    from h2crop_core.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_csv(writable_root / "cascade_labels.csv")
    path = _first(writable_root)
    label = read_sample(path, modalities=["label"])["label"]
    label[2, :3, :3] = 83  # level 3 has ids 0..82
    label[2, 5, 5] = 200
    _rewrite(path, "label", label)
    read_sample(path, modalities=["label"])  # no taxonomy: no range check
    with pytest.raises(
        SampleError, match=r"\[label\]: expected level3 ids 0..82 or 255.*found id\(s\) \[83, 200\] on 10 pixel"
    ):
        read_sample(path, modalities=["label"], taxonomy=taxonomy)
    prior = read_sample(path, modalities=["prior"])["prior"]
    prior[0, 0, 0] = 7  # level 1 has ids 0..6
    _rewrite(path, "priors", prior)
    with pytest.raises(SampleError, match=r"\[priors\]: expected level1 ids 0..6"):
        read_sample(path, modalities=["prior"], taxonomy=taxonomy)


def test_truncated_missing_and_non_hdf5_files_are_named(writable_root, tmp_path):
    path = _first(writable_root)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SampleError, match="readable HDF5 file.*truncated") as info:
        read_sample(path)
    assert info.value.path == str(path) and info.value.key is None
    with pytest.raises(SampleError, match="existing HDF5 file"):
        read_sample(tmp_path / "absent.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(SampleError, match="readable HDF5 file"):
        read_sample(junk)


def test_corrupt_data_inside_a_valid_file_names_the_key(writable_root):
    path = _first(writable_root)
    with h5py.File(path) as handle:
        offset = handle["EnMAP_data"].id.get_offset()
    # keep the header and the file length, but make the EnMAP bytes unreadable: replace the dataset
    # storage by a compressed dataset whose chunk bytes are garbage.
    with h5py.File(path, "a") as handle:
        enmap = handle["EnMAP_data"][...]
        del handle["EnMAP_data"]
        handle.create_dataset("EnMAP_data", data=enmap, chunks=(218, 64, 64), compression="gzip")
        chunk_offset = handle["EnMAP_data"].id.get_chunk_info(0).byte_offset
    assert offset is not None
    with open(path, "r+b") as raw:
        raw.seek(chunk_offset)
        raw.write(b"\xff" * 64)
    with pytest.raises(SampleError) as info:
        read_sample(path, modalities=["enmap"])
    assert info.value.key == "EnMAP_data" and "read error" in info.value.found


def test_key_spellings_cover_the_readme_and_the_files():
    assert KEY_SPELLINGS["s2"] == ("S2_data", "S2")
    assert KEY_SPELLINGS["enmap"] == ("EnMAP_data", "EnMAP")
    assert KEY_SPELLINGS["prior"] == ("priors", "prior")
