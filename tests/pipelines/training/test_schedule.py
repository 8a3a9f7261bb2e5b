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
    assert "adds a per-pixel classifier beside the heads (pixel_branch=64" in planned.recipe_line
    mine = resolve_schedule(
        TrainSettings(data=str(tmp_path), preset="p", workers=1, overrides={"pixel_loss": 0}), paths
    )
    assert "its per-pixel classifier (pixel_branch=64 pixel_join=logits pixel_loss=1.0) left out (your --set)" in (
        mine.recipe_line
    )
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


def test_the_small_recipe_adds_its_per_pixel_classifier_unless_the_user_sets_the_branch():
    from h2crop_core.data.synth import generate_taxonomy
    from pipelines.training.context import model_config_for

    taxonomy, spec = generate_taxonomy((2, 3, 4, 5), seed=1), SampleSpec(size=96)

    def config(samples, **settings):
        return model_config_for(
            TrainSettings(data="d", preset="tiny_crops_S2_H_jun", **settings), taxonomy, spec, samples
        )

    small = config(40)
    assert (small.pixel_branch, small.pixel_join, small.pixel_loss) == tuple(value for _, value in SMALL.model)
    assert config(40, recipe="benchmark").pixel_branch == 0  # the paper's recipe: the preset as published
    assert config(5000).pixel_branch == 0 and config(40, lr=1e-3).pixel_branch == 0  # auto: benchmark
    assert config(None).pixel_branch == 0  # no training set: no recipe
    # a user's branch setting is theirs whole: none of the recipe's is mixed in
    alone = config(40, overrides={"pixel_branch": 0})
    assert (alone.pixel_branch, alone.pixel_join, alone.pixel_loss) == (0, "concat", 0.0)
    concat = config(40, overrides={"pixel_branch": 32})
    assert (concat.pixel_branch, concat.pixel_join, concat.pixel_loss) == (32, "concat", 0.0)
    assert config(40, init="region-a/best.ckpt").pixel_branch == 0  # fine-tuning keeps the checkpoint's model
