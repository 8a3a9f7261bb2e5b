"""A run's schedule resolved on the driver: the recipe, how an epoch draws its tiles, epochs and steps.

Settings left None take the recipe's values (:mod:`h2crop_core.recipe`); the resolved settings are what
the workers run and what MLflow records, so a run's parameters say what it did, not what was typed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from h2crop_core.data.reader import sample_name
from h2crop_core.data.sampling import count_labelled, describe_plan, draw_weights, epoch_plan, is_sparse, probe_paths
from h2crop_core.recipe import Recipe, capped_warmup, choose_recipe, model_line, schedule
from pipelines.settings import TrainSettings
from pipelines.training.steps import steps_per_epoch


@dataclass(frozen=True)
class Schedule:
    """What :func:`resolve_schedule` decided, and why (one console line each)."""

    settings: TrainSettings
    train_paths: tuple[str, ...]  #: one epoch's draws (tiles repeat)
    recipe_line: str
    sampling_line: str
    #: per sample name, its pixels' loss weight at levels 1..4 (:func:`~h2crop_core.data.sampling.draw_weights`);
    #: None when every tile is drawn equally often
    weights: dict | None = None

    @property
    def summary(self) -> str:
        s = self.settings
        return (
            f"schedule: {s.epochs} epoch(s) of {len(self.train_paths)} draws, {s.steps} optimizer steps, lr {s.lr:g} "
            f"({s.warmup_iters} warm-up steps, cosine to {s.min_lr:g})"
            + (f", patience {s.patience} epochs" if s.patience else "")
            + (
                f"; a {s.time_budget_minutes:g}-minute budget: the cosine is fitted to the epochs that fit after epoch 1"
                if s.time_budget_minutes
                else ""
            )
        )


def sampling_counts(settings: TrainSettings, paths: tuple[str, ...], *, progress: bool = False):
    """Labelled-pixel counts when the epoch draws by them (``labelled``, or ``auto`` on a sparsely labelled
    set, told from a probe of a few tiles), else None (uniform)."""
    if settings.sampling == "uniform":
        return None
    if settings.sampling == "auto" and not is_sparse(count_labelled(probe_paths(paths))):
        return None
    counts = count_labelled(paths, progress=progress)
    if counts[:, 0].sum() == 0:
        return None  # nothing labelled at all: the run will say so through its metrics, not a crash here
    return counts


def resolve_schedule(settings: TrainSettings, train_paths: tuple[str, ...], *, progress: bool = False) -> Schedule:
    """The recipe for this training set, the epoch's draws, and the epochs and steps that follow."""
    recipe, patience, recipe_line = choose_recipe(settings.recipe, len(train_paths), lr_given=settings.lr is not None)
    recipe_line += model_line(recipe, settings.overrides, init=bool(settings.init))
    counts = sampling_counts(settings, train_paths, progress=progress)
    plan = tuple(epoch_plan(list(train_paths), recipe.epoch_samples, counts))
    resolved = fill_from_recipe(settings, recipe, patience)
    per_epoch = steps_per_epoch(len(plan), resolved.workers, resolved)
    epochs, steps = schedule(settings.steps or recipe.steps, settings.epochs or recipe.epochs, per_epoch)
    resolved = replace(resolved, epochs=epochs, steps=steps, warmup_iters=capped_warmup(resolved.warmup_iters, steps))
    by_name = None if counts is None else {sample_name(p): row[2:] for p, row in zip(train_paths, counts.tolist())}
    weights = None if by_name is None else draw_weights(plan, by_name)
    return Schedule(resolved, plan, recipe_line, describe_plan(train_paths, plan, counts), weights)


def fill_from_recipe(settings: TrainSettings, recipe: Recipe, patience: int) -> TrainSettings:
    """``settings`` with every schedule value left None taken from ``recipe``."""

    def pick(value, default):
        return default if value is None else value

    lr = pick(settings.lr, recipe.lr)
    return replace(
        settings,
        recipe=recipe.name,
        lr=lr,
        warmup_iters=pick(settings.warmup_iters, recipe.warmup_iters),
        min_lr=pick(settings.min_lr, min(recipe.min_lr, lr)),
        patience=pick(settings.patience, patience),
    )
