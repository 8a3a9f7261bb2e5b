"""Sampling plans: sparsely labelled tiles drawn by their labelled pixels, dense sets left as they are."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import sample_name
from h2crop_core.data.sampling import count_labelled, draw_weights, epoch_plan, is_sparse, proportional_copies
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import synthesize_dataset


@pytest.fixture(scope="module")
def sparse_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    synthesize_dataset(root, 12, seed=2, spec=SampleSpec(size=96), region_size=None, label_fraction=0.1, progress=False)
    return root


def test_proportional_copies_sum_to_the_total_and_follow_the_weights():
    copies = proportional_copies(np.array([0, 1, 3, 6]), 20)
    assert copies.sum() == 20 and copies[0] == 0 and list(copies) == [0, 2, 6, 12]


def test_the_plan_draws_labelled_rich_tiles_more_often(sparse_root):
    paths = [str(p) for p in DatasetIndex(sparse_root).split_paths("train")]
    counts = count_labelled(paths)
    assert is_sparse(counts) and counts[:, 0].max() > 2 * max(1, np.median(counts[:, 0]))  # uneven, as a survey is
    plan = epoch_plan(paths, 64, counts)
    drawn = Counter(plan)
    assert len(plan) == 64
    richest, poorest = paths[int(counts[:, 0].argmax())], paths[int(counts[:, 0].argmin())]
    assert drawn[richest] > drawn.get(poorest, 0)
    assert all(drawn.get(p, 0) == 0 for p, n in zip(paths, counts[:, 0]) if n == 0)  # unlabelled tiles left out
    assert all(drawn[p] >= 1 for p, n in zip(paths, counts[:, 0]) if n > 0)  # no labelled tile left out
    order = np.argsort(counts[:, 0])
    assert [drawn.get(paths[i], 0) for i in order] == sorted(
        drawn.get(paths[i], 0) for i in order
    )  # monotone in the count


def test_dense_labels_keep_the_benchmarks_uniform_epoch(synth_root):
    paths = [str(p) for p in DatasetIndex(synth_root).split_paths("train")]
    assert not is_sparse(count_labelled(paths))
    assert epoch_plan(paths) == paths
    assert Counter(epoch_plan(paths, 3 * len(paths))) == Counter(dict.fromkeys(paths, 3))


def test_draw_weights_count_every_labelled_pixel_once_an_epoch(sparse_root):
    import torch

    from h2crop_core.models.loss import hierarchical_loss

    paths = [str(p) for p in DatasetIndex(sparse_root).split_paths("train")]
    counts = count_labelled(paths)
    assert counts.shape == (len(paths), 6) and (counts[:, 2:].max(axis=1) <= counts[:, 0]).all()
    plan = epoch_plan(paths, 64, counts)
    by_name = {sample_name(p): row[2:] for p, row in zip(paths, counts.tolist())}
    weights = draw_weights(plan, by_name)
    drawn = Counter(sample_name(p) for p in plan)
    assert weights is not None and set(weights) == set(drawn) and len(set(drawn.values())) > 1
    assert draw_weights(paths, by_name) is None, "each tile once (the benchmark's plan): the loss stays unweighted"

    # the epoch's loss (batches of 2 in plan order, each weighed by its size as train_epoch reports it) is
    # the mean over every labelled pixel once, per level, although rich tiles are drawn many times and a
    # batch may hold two copies of one tile
    import h2crop_core.data.sampling as sampling

    def read_label(path: str) -> torch.Tensor:
        with sampling.h5py.File(path, "r") as handle:
            return torch.as_tensor(sampling.find_dataset(handle, "label")[1][()])

    labels = {sample_name(p): read_label(p) for p in set(plan)}
    generator = torch.Generator().manual_seed(0)
    logits = {name: torch.randn(1, 5, *label.shape[1:], generator=generator) for name, label in labels.items()}
    for level in (1, 4):
        targets = {n: (labels[n][level - 1] % 5).where(labels[n][level - 1] != 255, 255).long() for n in labels}
        pixel_sum = sum(
            torch.nn.functional.cross_entropy(logits[n], targets[n][None], ignore_index=255, reduction="sum")
            for n in labels
        )
        pixel_mean = pixel_sum / sum(int((targets[n] != 255).sum()) for n in labels)
        total, samples = 0.0, 0
        for start in range(0, len(plan), 2):
            names = [sample_name(p) for p in plan[start : start + 2]]
            batch_logits = torch.cat([logits[n] for n in names])
            batch_label = torch.stack([labels[n] for n in names])
            batch_label[:, level - 1] = torch.stack([targets[n] for n in names]).to(batch_label.dtype)
            weight = torch.tensor([weights[n] for n in names])
            total += float(hierarchical_loss([batch_logits], batch_label, (level,), weight)) * len(names)
            samples += len(names)
        assert total / samples == pytest.approx(float(pixel_mean), rel=1e-5), level


def test_a_uniform_plan_draws_every_tile_equally_often_and_says_so(synth_root):
    from h2crop_core.data.sampling import describe_plan

    paths = [str(p) for p in DatasetIndex(synth_root).split_paths("train")]
    plan = epoch_plan(paths, len(paths) + 1)  # more draws than tiles: whole multiples, never some tiles twice
    assert Counter(plan) == Counter(dict.fromkeys(paths, 2))
    assert describe_plan(paths, plan, None).endswith(
        f"{len(plan)} draws of {len(paths)} training tiles an epoch, each 2x"
    )
