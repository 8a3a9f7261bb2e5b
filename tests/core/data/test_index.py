import pytest

from h2crop_core.data.index import DatasetError, DatasetIndex


def test_splits_cover_every_sample(synth_root):
    index = DatasetIndex(synth_root)
    names = [n for split in ("train", "val", "test") for n in index.split_names(split)]
    assert sorted(names) == sorted(p.stem for p in index.all_paths())
    assert len(names) == len(set(names)) == 12
    assert all(p.is_file() for p in index.split_paths("val"))


def test_data_list_spelling_is_accepted(writable_root):
    (writable_root / "data_lists").rename(writable_root / "data_list")
    index = DatasetIndex(writable_root)
    assert index.list_dir.name == "data_list"
    assert len(index.split_paths("train")) >= 1


def test_all_missing_files_of_a_split_are_reported_together(writable_root):
    index = DatasetIndex(writable_root)
    train = index.split_paths("train")
    for path in train[:2]:
        path.unlink()
    with open(index.split_file("train"), "a") as handle:
        handle.write("never_written_sample\n")
    with pytest.raises(DatasetError) as info:
        index.split_paths("train")
    message = str(info.value)
    assert f"3 of {len(train) + 1} listed sample(s) missing" in message
    for name in [train[0].stem, train[1].stem, "never_written_sample"]:
        assert name in message


def test_empty_or_missing_split_lists_and_roots(writable_root, tmp_path):
    index = DatasetIndex(writable_root)
    index.split_file("val").write_text("\n  \n")
    with pytest.raises(DatasetError, match="val.txt: split list is empty"):
        index.split_paths("val")
    index.split_file("test").unlink()
    with pytest.raises(DatasetError, match="test.txt: split list not found"):
        index.split_paths("test")
    with pytest.raises(DatasetError, match="unknown split"):
        index.split_paths("training")
    with pytest.raises(DatasetError, match="dataset root not found"):
        DatasetIndex(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DatasetError, match="h5_data"):
        DatasetIndex(tmp_path / "empty_root")


def test_fingerprint_changes_with_the_data(writable_root):
    index = DatasetIndex(writable_root)
    before = index.fingerprint()
    assert before == index.fingerprint()
    index.all_paths()[0].unlink()
    assert index.fingerprint() != before
