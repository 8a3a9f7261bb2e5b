"""A torch ``Dataset`` over sample files (TorchGeo style: dict samples), and the DataLoader helpers that
bring a bad file's error to the consumer as itself.

torch re-raises an exception from a DataLoader worker as a new exception of the same type built from the
worker's formatted traceback (or as a RuntimeError when that fails, e.g. for :class:`SampleError`'s four
arguments): the consumer could no longer tell a user's bad file from a bug. So in a worker
:class:`H2CropDataset` returns a :class:`ReadFailure` instead, :func:`collate_samples` turns a batch
holding one into that failure, and :func:`raise_read_failures` raises the original error in the consumer::

    loader = DataLoader(H2CropDataset(paths, reader), batch_size=4, num_workers=2, collate_fn=collate_samples)
    for batch in raise_read_failures(loader):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from h2crop_core.data.reader import SampleReader
from h2crop_core.data.schema import Sample
from h2crop_core.errors import H2CropError

Batch = TypeVar("Batch")


@dataclass(frozen=True)
class ReadFailure:
    """A sample that could not be read in a DataLoader worker: the error travels as data (it pickles)."""

    error: H2CropError


class H2CropDataset(Dataset):
    """Samples read by a :class:`SampleReader`, as dicts of tensors (plus ``name``).

    Args:
        paths: the sample files (e.g. ``DatasetIndex(root).split_paths("train")``).
        reader: fixes window, modalities, checks and normalisation.
        transform: optional function applied to each sample dict after conversion to tensors.

    In the process that indexes it, a bad file raises its :class:`~h2crop_core.errors.H2CropError`; in a
    DataLoader worker, the item is a :class:`ReadFailure` holding it (use :func:`collate_samples` and
    :func:`raise_read_failures`).
    """

    def __init__(
        self, paths: Sequence[str | Path], reader: SampleReader, transform: Callable[[dict], dict] | None = None
    ):
        self.paths = [Path(p) for p in paths]
        self.reader = reader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict | ReadFailure:
        try:
            sample = to_tensors(self.reader.read(self.paths[index]))
        except H2CropError as error:
            if get_worker_info() is None:  # not in a worker: the error reaches the caller as it is
                raise
            return ReadFailure(error)
        return self.transform(sample) if self.transform else sample


def collate_samples(items: list[dict | ReadFailure]) -> dict | ReadFailure:
    """``default_collate`` of sample dicts; a batch holding a :class:`ReadFailure` is that failure (the first)."""
    for item in items:
        if isinstance(item, ReadFailure):
            return item
    return default_collate(items)


def raise_read_failures(batches: Iterable[Batch | ReadFailure]) -> Iterator[Batch]:
    """Yield ``batches``, raising the error of the first :class:`ReadFailure` (the original error object, in
    the consumer's process) instead of yielding it."""
    for batch in batches:
        if isinstance(batch, ReadFailure):
            raise batch.error
        yield batch


def to_tensors(sample: Sample) -> dict:
    """NumPy arrays to tensors (no copy where possible); other values unchanged."""
    return {
        key: torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        for key, value in sample.items()
    }
