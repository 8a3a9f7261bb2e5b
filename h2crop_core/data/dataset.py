"""A torch ``Dataset`` over sample files (TorchGeo style: dict samples)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from h2crop_core.data.reader import SampleReader
from h2crop_core.data.schema import Sample


class H2CropDataset(Dataset):
    """Samples read by a :class:`SampleReader`, as dicts of tensors (plus ``name``).

    Args:
        paths: the sample files (e.g. ``DatasetIndex(root).split_paths("train")``).
        reader: fixes window, modalities, checks and normalisation.
        transform: optional function applied to each sample dict after conversion to tensors.
    """

    def __init__(self, paths: Sequence[str | Path], reader: SampleReader, transform: Callable[[dict], dict] | None = None):
        self.paths = [Path(p) for p in paths]
        self.reader = reader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        sample = to_tensors(self.reader.read(self.paths[index]))
        return self.transform(sample) if self.transform else sample


def to_tensors(sample: Sample) -> dict:
    """NumPy arrays to tensors (no copy where possible); other values unchanged."""
    return {key: torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value for key, value in sample.items()}
