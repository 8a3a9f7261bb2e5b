import pytest
import torch
from torch.utils.data import DataLoader

from h2crop_core.data.dataset import H2CropDataset, ReadFailure, collate_samples, raise_read_failures
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleError, SampleReader

READER = SampleReader("jun", ("s2", "label"))


def test_batches_collate_as_with_the_default_collate(synth_root):
    paths = DatasetIndex(synth_root).split_paths("train")[:4]
    loader = DataLoader(H2CropDataset(paths, READER), batch_size=2, num_workers=2, collate_fn=collate_samples)
    batches = list(raise_read_failures(loader))
    assert (
        len(batches) == 2 and batches[0]["s2"].shape == (2, 6, 10, 192, 192) and batches[0]["s2"].dtype == torch.int16
    )
    assert batches[1]["name"] == [p.stem for p in paths[2:]]


def test_a_bad_file_in_a_loader_worker_arrives_as_its_own_error(writable_root):
    paths = DatasetIndex(writable_root).all_paths()
    bad = paths[3]
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    loader = DataLoader(H2CropDataset(paths, READER), batch_size=2, num_workers=2, collate_fn=collate_samples)
    with pytest.raises(SampleError) as info:
        for _ in raise_read_failures(loader):
            pass
    assert type(info.value) is SampleError
    message = str(info.value)
    assert (
        message.startswith(f"{bad}: expected a readable HDF5 file")
        and "\n" not in message
        and "Traceback" not in message
    )
    assert info.value.path == str(bad) and info.value.key is None


def test_outside_a_worker_the_error_is_raised_directly(writable_root):
    path = DatasetIndex(writable_root).all_paths()[0]
    path.write_bytes(b"junk")
    dataset = H2CropDataset([path], READER)
    with pytest.raises(SampleError, match="readable HDF5 file"):
        dataset[0]
    with pytest.raises(SampleError):  # num_workers=0: the same, with or without the helpers
        list(raise_read_failures(DataLoader(dataset, collate_fn=collate_samples)))


def test_a_failure_in_a_batch_is_the_batch():
    error = SampleError("a.h5", None, "x", "y")
    assert collate_samples([{"v": torch.zeros(1)}, ReadFailure(error)]) == ReadFailure(error)
    with pytest.raises(SampleError) as info:
        list(raise_read_failures([1, ReadFailure(error), 2]))
    assert info.value is error
