"""Training recipes: the schedule a run follows, picked to fit the training set, and its learning rate.

The benchmark's recipe (lr 6e-5, 1,000 warm-up steps, cosine over 100 epochs) is made for 12,016 samples,
about 300k optimizer steps. On a user's few dozen tiles the same settings give a few hundred steps at a
learning rate too low to learn anything in them. The ``small`` recipe is defined in optimizer steps
instead: a higher learning rate, a short warm-up, at least ``steps`` steps however few samples there are,
epochs of at least ``epoch_samples`` draws (so validation, checkpoints and early stopping come every few
dozen steps rather than every step) and early stopping on validation mF1. ``auto`` chooses between the two
by the number of training samples alone, so the choice is known before anything is read.

The learning rate warms up linearly, then decays on a cosine to ``min_lr`` at the schedule's last step
(:class:`WarmupCosine`); the warm-up is at most a tenth of the steps (:func:`capped_warmup`). With a time
budget the schedule is fitted, after the first epoch, to the epochs that fit in it (:func:`budget_steps`), so
that the cosine ends within the budget instead of being cut off near its peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from h2crop_core.errors import SettingError


@dataclass(frozen=True)
class Recipe:
    """A training schedule. ``steps`` None: the schedule is ``epochs`` passes over the data (the benchmark's
    definition); otherwise it is ``steps`` optimizer steps and ``epochs`` only bounds it."""

    name: str
    lr: float
    warmup_iters: int
    min_lr: float
    epochs: int
    steps: int | None = None
    epoch_samples: int = 0  #: draws per epoch at least (tiles repeat within an epoch to reach it)
    patience: int = 0  #: epochs without a better validation mF1 before stopping; 0 = never
    #: model settings the recipe adds to the preset, as (key, value) pairs; none of them when the user sets
    #: any (``--set``), so that a user's choice is never half-mixed with the recipe's
    model: tuple[tuple[str, object], ...] = ()


#: the research code's recipe, for the benchmark's thousands of samples (H2CROP.md, "Recipe")
BENCHMARK = Recipe("benchmark", lr=6e-5, warmup_iters=1000, min_lr=6e-6, epochs=100)
#: the small recipe's model additions: a per-pixel classifier beside the spatial heads, its logits added to
#: theirs and trained on its own loss too. Within a 15-minute budget it learns the labelled pixels' spectra
#: that the spatial model alone has not yet fitted (benchmarks/small_data.py; docs/benchmarks.md, 2026-12-06)
SMALL_MODEL = (("pixel_branch", 64), ("pixel_join", "logits"), ("pixel_loss", 1.0))
#: for a few to a few hundred tiles: measured in benchmarks/small_data.py
SMALL = Recipe(
    "small",
    lr=2e-3,
    warmup_iters=50,
    min_lr=2e-5,
    epochs=10_000,
    steps=1500,
    epoch_samples=128,
    patience=12,
    model=SMALL_MODEL,
)
RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (BENCHMARK, SMALL)}
RECIPE_CHOICES: tuple[str, ...] = ("auto", *RECIPES)

#: ``auto`` takes the small recipe below this many training samples: the benchmark recipe's 100 epochs
#: give fewer optimizer steps than the small recipe's minimum there (2,000 samples at batch 4 on 2 workers
#: are 250 steps an epoch, 25k in 100 epochs)
SMALL_SET_SAMPLES = 2000
#: early stopping that ``auto`` adds to the benchmark recipe (epochs)
AUTO_PATIENCE = 20


def choose_recipe(requested: str, train_samples: int, *, lr_given: bool = False) -> tuple[Recipe, int, str]:
    """The recipe for a training set, its early-stopping patience and why, in a line for the console.

    Args:
        requested: ``auto``, ``small`` or ``benchmark``.
        train_samples: samples in the training split.
        lr_given: the user set the learning rate: ``auto`` keeps the benchmark recipe around it (as
            before recipes existed; sweeps set their own learning rates).
    """
    if requested not in RECIPE_CHOICES:
        raise SettingError(f"recipe must be one of {', '.join(RECIPE_CHOICES)}; got {requested!r}")
    if requested != "auto":
        recipe = RECIPES[requested]
        return recipe, recipe.patience, f"recipe {recipe.name} (--recipe {requested})"
    if lr_given:
        return (
            BENCHMARK,
            AUTO_PATIENCE,
            f"recipe benchmark around the given --lr (auto; early stopping after {AUTO_PATIENCE} epochs without a better val mF1)",
        )
    if train_samples < SMALL_SET_SAMPLES:
        why = (
            f"recipe small: {train_samples} training samples (< {SMALL_SET_SAMPLES}): lr {SMALL.lr:g}, {SMALL.warmup_iters} warm-up steps, "
            f"{SMALL.steps} optimizer steps, early stopping after {SMALL.patience} epochs without a better val "
            "mF1 (--recipe benchmark for the paper's)"
        )
        return SMALL, SMALL.patience, why
    why = (
        f"recipe benchmark: {train_samples} training samples: lr {BENCHMARK.lr:g}, {BENCHMARK.warmup_iters} warm-up steps, cosine over "
        f"{BENCHMARK.epochs} epochs, early stopping after {AUTO_PATIENCE} epochs without a better val mF1 (--recipe benchmark: no early stopping)"
    )
    return BENCHMARK, AUTO_PATIENCE, why


def recipe_model(recipe: Recipe, overrides: dict, *, init: bool = False) -> dict:
    """The model settings ``recipe`` adds under the user's ``overrides``: all of its own, or none when the
    user sets any of them, or when the run starts from a checkpoint (``init``: fine-tuning keeps the model the
    checkpoint was trained as, the preset with the user's settings)."""
    added = dict(recipe.model)
    return {} if init or added.keys() & overrides.keys() else added


def model_line(recipe: Recipe, overrides: dict, *, init: bool = False) -> str:
    """What the recipe does to the model, for the console's recipe line ("" when it has nothing to add)."""
    if not recipe.model:
        return ""
    settings = " ".join(f"{key}={value}" for key, value in recipe.model)
    if recipe_model(recipe, overrides, init=init):
        return f"; adds a per-pixel classifier beside the heads ({settings}; --set pixel_branch=0: the preset alone)"
    why = "--init: the checkpoint's model" if init else "your --set"
    return f"; its per-pixel classifier ({settings}) left out ({why})"


def schedule(recipe_steps: int | None, epochs: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs to run, optimizer steps of the cosine schedule): ``recipe_steps`` steps (None: ``epochs``
    full epochs), never more epochs than ``epochs``."""
    if recipe_steps is None:
        return epochs, epochs * steps_per_epoch
    run_epochs = min(epochs, max(1, math.ceil(recipe_steps / steps_per_epoch)))
    return run_epochs, min(recipe_steps, run_epochs * steps_per_epoch)


#: the warm-up is at most this share of the schedule's steps
WARMUP_SHARE = 0.1


def capped_warmup(warmup_iters: int, total_steps: int) -> int:
    """The warm-up a schedule of ``total_steps`` runs: at most a tenth of its steps."""
    return min(warmup_iters, int(total_steps * WARMUP_SHARE))


def lr_factor(step: int, total: int, warmup: int, warmup_start: float, min_ratio: float) -> float:
    """Multiplier of the base lr: linear warm-up from ``warmup_start`` over ``warmup`` steps, then cosine
    decay to ``min_ratio`` at ``total`` (and after it)."""
    if warmup > 0 and step < warmup:
        return warmup_start + (1 - warmup_start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """:func:`lr_factor` as an object for ``torch.optim.lr_scheduler.LambdaLR``: LambdaLR saves a callable
    object's attributes with its state, so a schedule fitted to a time budget is restored as fitted."""

    def __init__(self, total: int, warmup: int, warmup_start: float, min_ratio: float) -> None:
        self.total, self.warmup, self.warmup_start, self.min_ratio = total, warmup, warmup_start, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.warmup_start, self.min_ratio)


def budget_steps(budget_s: float, epoch_s: float, steps_per_epoch: int, epochs: int, total: int) -> tuple[int, int]:
    """(epochs, schedule steps) that fit a time budget at the pace of a first epoch of ``epoch_s`` seconds and
    ``steps_per_epoch`` optimizer steps; (``epochs``, ``total``) when the whole schedule fits."""
    fit = max(1, int(budget_s // max(epoch_s, 1e-9)))
    if fit >= epochs or fit * steps_per_epoch >= total:
        return epochs, total
    return fit, fit * steps_per_epoch
