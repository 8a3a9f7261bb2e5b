"""The schedule a run resolves on the driver: recipe, sampling plan, epochs and steps (no Ray)."""

from __future__ import annotations

from collections import Counter

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import synthesize_dataset
from h2crop_core.recipe import BENCHMARK, SMALL
from pipelines.settings import TrainSettings
from pipelines.training.schedule import resolve_schedule


def test_defaults_on_a_small_sparse_set_take_the_small_recipe_and_labelled_draws(tmp_path):
    synthesize_dataset(
        tmp_path, 10, seed=4, spec=SampleSpec(size=96), region_size=None, label_fraction=0.1, progress=False
    )
    paths = tuple(str(p) for p in DatasetIndex(tmp_path).split_paths("train"))
    planned = resolve_schedule(TrainSettings(data=str(tmp_path), preset="p", workers=1), paths)
    s = planned.settings
    assert (s.recipe, s.lr, s.warmup_iters, s.patience, s.steps) == (
        "small",
        SMALL.lr,
        SMALL.warmup_iters,
        SMALL.patience,
        SMALL.steps,
    )
    assert len(planned.train_paths) == SMALL.epoch_samples and s.epochs == -(
        -SMALL.steps // (SMALL.epoch_samples // s.batch_size)
    )
    assert "recipe small" in planned.recipe_line and "sampling labelled" in planned.sampling_line
    assert (
        len(Counter(planned.train_paths)) < len(paths) or len(set(Counter(planned.train_paths).values())) > 1
    )  # not uniform

    given = resolve_schedule(
        TrainSettings(data=str(tmp_path), preset="p", workers=1, lr=1e-3, epochs=2, sampling="uniform"), paths
    )
    g = given.settings
    assert (g.recipe, g.lr, g.min_lr, g.epochs) == ("benchmark", 1e-3, BENCHMARK.min_lr, 2)
    assert given.train_paths == paths and g.steps == 2 * -(-len(paths) // g.batch_size)
    # the benchmark's 1,000 warm-up steps are capped at a tenth of these few steps: what runs is recorded
    assert (
        g.warmup_iters == g.steps // 10 < BENCHMARK.warmup_iters and f"({g.warmup_iters} warm-up steps" in given.summary
    )
