"""Recipes: the choice by training-set size (nothing read) and the step-defined schedule."""

from __future__ import annotations

import pytest

from h2crop_core.errors import SettingError
from h2crop_core.recipe import AUTO_PATIENCE, BENCHMARK, SMALL, SMALL_SET_SAMPLES, choose_recipe, schedule


def test_auto_picks_small_for_a_small_set_and_benchmark_for_a_large_one():
    recipe, patience, why = choose_recipe("auto", 48)
    assert recipe is SMALL and patience == SMALL.patience and "48 training samples" in why
    recipe, patience, why = choose_recipe("auto", 12_016)
    assert recipe is BENCHMARK and patience == AUTO_PATIENCE and "12016" in why
    assert (
        choose_recipe("auto", SMALL_SET_SAMPLES - 1)[0] is SMALL
        and choose_recipe("auto", SMALL_SET_SAMPLES)[0] is BENCHMARK
    )


def test_an_explicit_recipe_or_lr_overrides_the_size_rule():
    assert choose_recipe("benchmark", 10)[:2] == (BENCHMARK, 0)  # the paper's: no early stopping
    assert choose_recipe("small", 50_000)[0] is SMALL
    assert choose_recipe("auto", 10, lr_given=True)[0] is BENCHMARK  # sweeps set their own lr
    with pytest.raises(SettingError, match="recipe must be one of"):
        choose_recipe("fast", 10)


def test_schedule_is_steps_bounded_by_epochs():
    assert schedule(1500, 10_000, 32) == (47, 1500)  # 47 epochs of 32 steps cover 1,500
    assert schedule(1500, 5, 32) == (5, 160)  # --epochs bounds it
    assert schedule(None, 100, 3004) == (100, 300_400)  # the benchmark's: epochs x steps per epoch


def test_a_recipes_model_settings_are_added_whole_or_not_at_all():
    from h2crop_core.recipe import BENCHMARK, SMALL, recipe_model

    assert recipe_model(SMALL, {}) == dict(SMALL.model) and SMALL.model
    assert recipe_model(SMALL, {"fusion": "gated"}) == dict(SMALL.model)  # other settings do not touch it
    assert recipe_model(SMALL, {"pixel_loss": 0.5}) == {}
    assert recipe_model(BENCHMARK, {}) == {}
    assert recipe_model(SMALL, {}, init=True) == {}  # fine-tuning: the checkpoint's model
