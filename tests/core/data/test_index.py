import os

import numpy as np
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


def test_fingerprint_sees_a_same_size_rewrite_and_names_its_split(writable_root):
    import h5py

    index = DatasetIndex(writable_root)
    before, train, summary = index.fingerprint(), index.fingerprint(("train",)), index.summary()
    (val,) = index.split_paths("val")[:1]
    size = val.stat().st_size
    with h5py.File(val, "r+") as sample:  # fixed-shape datasets: the file keeps its size
        key = next(k for k in sample if "label" in k.lower())
        sample[key][0, 0, 0] = (int(sample[key][0, 0, 0]) + 1) % 2
    os.utime(val, ns=(val.stat().st_atime_ns, val.stat().st_mtime_ns + 10**9))  # past the clock's resolution
    assert val.stat().st_size == size and index.fingerprint() != before
    assert index.fingerprint(("train",)) == train  # the training split (its statistics) is unchanged
    changed = index.summary()
    assert changed["val"]["latest_change"] != summary["val"]["latest_change"] and changed["train"] == summary["train"]


def test_norm_stats_are_recomputed_when_the_training_split_changed(writable_root, capsys):
    import h5py

    from h2crop_core.data.reader import infer_dataset_spec
    from h2crop_core.data.stats import ensure_norm_stats

    index = DatasetIndex(writable_root)
    index.norm_stats_path.unlink(missing_ok=True)
    spec = infer_dataset_spec(index.split_paths("train"))
    first = ensure_norm_stats(index, spec, workers=1, progress=False)
    assert first.meta["train_fingerprint"] == index.fingerprint(("train",))
    assert ensure_norm_stats(index, spec, workers=1, progress=False).meta == first.meta  # reused
    path = index.split_paths("train")[0]
    with h5py.File(path, "r+") as sample:
        key = next(k for k in sample if k.lower().startswith("s2"))
        sample[key][...] = sample[key][...] // 2  # other reflectances, the same size
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    again = ensure_norm_stats(index, spec, workers=1, progress=False)
    assert "the training split changed since" in capsys.readouterr().out
    assert again.meta["train_fingerprint"] == index.fingerprint(("train",)) != first.meta["train_fingerprint"]
    assert not np.allclose(again.s2_mean, first.s2_mean)
