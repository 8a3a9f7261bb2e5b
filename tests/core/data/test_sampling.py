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
    assert all(drawn.get(p, 0) == 0 for p, (n, _) in zip(paths, counts) if n == 0)  # unlabelled tiles left out
    assert all(drawn[p] >= 1 for p, (n, _) in zip(paths, counts) if n > 0)  # no labelled tile left out
    order = np.argsort(counts[:, 0])
    assert [drawn.get(paths[i], 0) for i in order] == sorted(
        drawn.get(paths[i], 0) for i in order
    )  # monotone in the count


def test_dense_labels_keep_the_benchmarks_uniform_epoch(synth_root):
    paths = [str(p) for p in DatasetIndex(synth_root).split_paths("train")]
    assert not is_sparse(count_labelled(paths))
    assert epoch_plan(paths) == paths
    assert Counter(epoch_plan(paths, 3 * len(paths))) == Counter(dict.fromkeys(paths, 3))


def test_draw_weights_count_every_tile_once_an_epoch(sparse_root):
    paths = [str(p) for p in DatasetIndex(sparse_root).split_paths("train")]
    plan = epoch_plan(paths, 64, count_labelled(paths))
    weights = draw_weights(plan)
    drawn = Counter(sample_name(p) for p in plan)
    assert weights is not None and set(weights) == set(drawn) and len(set(drawn.values())) > 1
    # copies × weight is the same for every tile (each counts as drawn once), and a draw weighs 1 on average
    assert np.allclose([drawn[name] * weights[name] for name in drawn], len(plan) / len(drawn))
    assert np.isclose(sum(weights[sample_name(p)] for p in plan) / len(plan), 1.0)
    assert draw_weights(paths) is None, "each tile once (the benchmark's plan): the loss stays unweighted"
