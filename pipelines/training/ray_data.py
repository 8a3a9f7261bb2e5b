"""Ray Data input: datasets of sample *paths*, sharded across Train workers exactly once per epoch.

Two ways to get arrays to a training worker:

* ``paths`` (default): Ray Data shards the cheap path rows (with node locality); each worker reads its
  paths itself through the ``h2crop_core`` reader with reader processes that live for the whole run. The
  10 MiB samples never cross the object store, which measured ~40% slower than a per-worker DataLoader.
* ``arrays``: Ray Data reads the samples in parallel tasks (``map_batches`` over paths) and the workers
  stream the arrays with ``iter_torch_batches``: reading scales out to CPU-only nodes, at the cost of moving
  the arrays through the object store.

Either way ``ExactlyOnceDataConfig`` splits with ``equal=False``: Train's default split drops
``N mod world_size`` samples every epoch. Unequal shards mean unequal step counts; the training loop uses
``torch.distributed.algorithms.Join`` for that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray.train import DataConfig
from torch.utils.data import DataLoader, Sampler

from h2crop_core.data.dataset import H2CropDataset, collate_samples, raise_read_failures
from h2crop_core.data.reader import SampleReader
from pipelines.settings import INPUT_MODES

#: path rows per block: small blocks let ``streaming_split(equal=False)`` balance shards dynamically
ROWS_PER_BLOCK = 4


class ExactlyOnceDataConfig(DataConfig):
    """Split every dataset with ``streaming_split(equal=False)``: each row reaches exactly one worker."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = [{} for _ in range(world_size)]
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, dataset in datasets.items():
            if dataset.name is None:
                dataset.set_name(name)
            dataset = dataset.copy(dataset)
            dataset.context.execution_options = self._resolve_execution_options(name)
            for i, split in enumerate(dataset.streaming_split(world_size, equal=False, locality_hints=hints)):
                output[i][name] = split
        return output


def path_dataset(paths: Sequence[str | Path], shuffle: bool = False) -> ray.data.Dataset:
    """A dataset with one ``path`` row per sample file; ``shuffle`` re-shuffles the rows every epoch (the
    cheap path rows, before any array is read), so workers get different samples each epoch."""
    rows = [{"path": str(p)} for p in paths]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // ROWS_PER_BLOCK, 512)))
    return dataset.random_shuffle() if shuffle else dataset


@dataclass(frozen=True)
class ReadSamples:
    """``map_batches`` function for the ``arrays`` mode: path rows -> sample columns."""

    reader: SampleReader

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = [self.reader.read(path) for path in batch["path"]]
        keys = [k for k in samples[0] if k != "name"]
        out = {key: np.stack([s[key] for s in samples]) for key in keys}
        out["name"] = np.array([s["name"] for s in samples])
        return out


def array_dataset(
    paths: Sequence[str | Path], reader: SampleReader, read_batch: int = 4, shuffle: bool = False
) -> ray.data.Dataset:
    """Samples read in parallel Ray tasks (the ``arrays`` mode)."""
    return path_dataset(paths, shuffle).map_batches(ReadSamples(reader), batch_size=read_batch, batch_format="numpy")


def shard_paths(shard) -> list[str]:
    """Drain a worker's shard of path rows (cheap: strings only)."""
    return [str(p) for batch in shard.iter_batches(batch_size=1024, batch_format="numpy") for p in batch["path"]]


class _EpochSampler(Sampler):
    """Yields the dataset indices set for the current epoch (read in the main process at each epoch)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ShardReader:
    """A training worker's view of one dataset shard: batches (dicts of tensors on ``device``, plus
    ``name``) epoch after epoch.

    In ``paths`` mode the worker drains its shard of path rows at the start of each epoch, shuffles them
    with the epoch's seed and reads them with ``loader_workers`` reader processes that live for the whole
    run: a DataLoader over *all* of the split's paths whose sampler is pointed at this epoch's share
    (forking new readers every epoch cost about a tenth of an epoch here). In ``arrays`` mode the shard
    already carries the arrays and its order is Ray Data's.

    Args:
        shard: ``ray.train.get_dataset_shard(name)``.
        mode: ``paths`` or ``arrays``.
        reader: the sample reader (``paths`` mode).
        all_paths: every path the shard can hold (``paths`` mode), e.g. the split's paths.
    """

    def __init__(
        self,
        shard,
        mode: str,
        reader: SampleReader | None,
        batch_size: int,
        *,
        all_paths: Sequence[str | Path] = (),
        loader_workers: int = 1,
        device: torch.device | str = "cpu",
    ):
        if mode not in INPUT_MODES:
            raise ValueError(f"input mode must be one of {INPUT_MODES}, got {mode!r}")
        self.shard, self.mode, self.batch_size, self.device = shard, mode, batch_size, device
        self._next_paths: Future | None = None
        self._drainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2crop-shard")
        if mode == "paths":
            self.position = {str(p): i for i, p in enumerate(all_paths)}
            self.sampler = _EpochSampler()
            self.loader = DataLoader(
                H2CropDataset(list(all_paths), reader),
                batch_size=batch_size,
                sampler=self.sampler,
                collate_fn=collate_samples,  # a bad file's error reaches this process whole (see raise_read_failures)
                num_workers=loader_workers,
                persistent_workers=loader_workers > 0,
                prefetch_factor=2 if loader_workers > 0 else None,
            )

    def epoch(self, shuffle_seed: int | None = None, prefetch_next: bool = False) -> EpochBatches:
        """One epoch of this worker's batches; ``shuffle_seed`` None keeps the shard's order.

        ``prefetch_next`` (``paths`` mode) starts draining the next epoch's paths in the background while
        this epoch is read and trained on. Every worker must pass the same value, since shards of a split
        are consumed together. The shard is drained here, so the returned batches know their count.
        """
        if self.mode == "arrays":
            return EpochBatches(
                self.shard.iter_torch_batches(batch_size=self.batch_size, collate_fn=_numpy_to_torch), None, self.device
            )
        paths = self._next_paths.result() if self._next_paths is not None else shard_paths(self.shard)
        self._next_paths = self._drainer.submit(shard_paths, self.shard) if prefetch_next else None
        if shuffle_seed is not None:
            np.random.default_rng(shuffle_seed).shuffle(paths)
        unknown = [p for p in paths if p not in self.position]
        if unknown:
            raise ValueError(f"shard paths not among the split's paths: {unknown[:3]}")
        self.sampler.indices = [self.position[p] for p in paths]
        return EpochBatches(self.loader if paths else (), math.ceil(len(paths) / self.batch_size), self.device)

    def close(self, wait: bool = True) -> None:
        """Stop the drain thread. ``wait``: first let a next-epoch drain still running finish (after a
        complete run every worker started it, so it completes); its outcome no longer matters. Without
        ``wait`` (the run failed: another worker may never drain its share) the thread is left to the
        process's end."""
        if wait and self._next_paths is not None:
            self._next_paths.exception()  # waits; an error of a drain nobody needs is not the run's error
        self._next_paths = None
        self._drainer.shutdown(wait=wait, cancel_futures=not wait)


@dataclass
class EpochBatches:
    """One epoch of batches moved to ``device``; ``batches`` is their count where known (paths mode)."""

    source: Iterable[dict]
    batches: int | None
    device: torch.device | str = "cpu"

    def __iter__(self) -> Iterator[dict]:
        for batch in raise_read_failures(self.source):
            yield {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }


def _numpy_to_torch(batch: dict[str, np.ndarray]) -> dict:
    # names are strings: keep them as a list rather than letting Ray try to make a tensor of them
    return {
        k: [str(n) for n in v] if k == "name" else torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()
    }
