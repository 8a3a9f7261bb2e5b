"""Sweeps: a space file -> Ray Tune trials, each a Ray Train run of the training steps, tracked in MLflow.

``run_sweep`` is what ``h2crop tune`` calls:

* the dataset (taxonomy, layout, statistics, splits) is prepared once, on the driver, for every trial;
* each trial is a Tune *function trainable* (:func:`run_trial`) that builds the trial's ``TorchTrainer``
  with ``TuneReportCallback`` (Train V2's pattern) and runs it; ASHA (or FIFO) decides on the space's
  metric after each epoch;
* the sweep is a parent MLflow run; each trial a child (``mlflow.parentRunId``) logged exactly as a
  training run is, plus its space values as the tag ``h2crop.config``. A trial stopped early ends KILLED,
  a failed one FAILED: never left RUNNING;
* the sweep keeps its own record of its trials: the space file gives the list (``t00``, ``t01``, ..., the
  same for the same space, ``--trials`` and ``--seed``, stored on the parent run), and a trial is done once
  its MLflow run carries ``h2crop.trial_end`` (``finished``: outputs copied; ``stopped``: ASHA stopped it).
  Re-running with the same ``--name`` runs a new Tune experiment over the trials not done: unfinished ones
  continue from their Train checkpoints, failed ones run again. Tune's own search state is never restored
  (a restored searcher could leave the controller waiting forever for a trial that never comes);
* ``--repeat-best K`` trains the best configuration again with K other seeds (children tagged with the
  trial they repeat), so a comparison can show mean ± std.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.recipe import BENCHMARK
from h2crop_core.runlock import RunLock
from pipelines.runtime import tracking
from pipelines.settings import TrainSettings, TuneSettings
from pipelines.sweeps.record import (
    attempts,
    best_trial,
    child_runs,
    done_keys,
    histories,
    latest_attempt,
    next_seed,
    open_parent,
)
from pipelines.sweeps.space import Choice, Range, SearchSpace, SpaceError, check_epochs, load_space, trial_settings
from pipelines.training.context import DatasetContext, model_config_for, prepare_dataset
from pipelines.training.finetune import plan_start, read_start
from pipelines.training.train import resolve_storage

#: resources of the trial's own actor (it only waits on its Train run; Tune refuses zero)
TRIAL_ACTOR = {"CPU": 0.01}
TRIALS_FOLDER = "trials"
#: the one value Tune varies: the key of a trial in the sweep's own list (its settings come from the plan)
TRIAL_KEY = "trial"


@dataclass(frozen=True)
class SweepPlan:
    """What every trial of a sweep shares (sent once to the cluster with ``tune.with_parameters``)."""

    name: str
    space: SearchSpace
    base: TrainSettings
    data: DatasetContext
    output: str
    storage: str
    parent_run_id: str
    configs: dict = field(default_factory=dict)  #: trial key -> the space's values for it (the sweep's own list)
    kind: str = "trial"
    repeat_of: str = ""

    @property
    def train_storage(self) -> str:
        """Where the trials' Ray Train runs keep their checkpoints (beside the Tune experiment)."""
        return f"{self.storage.rstrip('/')}/{self.name}-{TRIALS_FOLDER}"

    def varied(self) -> list[str]:
        """The keys whose values tell the trials apart on the console."""
        keys = [k for k, p in self.space.params.items() if isinstance(p, (Choice, Range))]
        seeds = any("seed" in config for config in self.configs.values())
        return keys + (["seed"] if seeds and "seed" not in keys else [])


# -------------------------------------------------------------------------------------- one trial
def run_trial(config: dict, plan: SweepPlan) -> None:
    """The Tune trainable: one trial = one Ray Train run of the trial's settings (a trial run again after an
    interruption continues its Train run from its last checkpoint: same run name, same storage)."""
    from mlflow.tracking import MlflowClient
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.training import train

    key = config[TRIAL_KEY]
    values = plan.configs[key]
    settings = trial_settings(
        plan.base,
        values,
        source=plan.space.path,
        run_name=f"{plan.name}-{key}",
        output=str(Path(plan.output) / TRIALS_FOLDER / key),
        storage=plan.train_storage,
    )
    run = train.prepare_run(settings, plan.data)
    tags = {
        tracking.PARENT_TAG: plan.parent_run_id,
        tracking.SWEEP_TAG: plan.name,
        tracking.KIND_TAG: plan.kind,
        tracking.CONFIG_TAG: json.dumps(values, sort_keys=True, default=str),
        tracking.TRIAL_ID_TAG: key,
    }
    if plan.repeat_of:
        tags["h2crop.repeat_of"] = plan.repeat_of
    run = replace(run, loop=replace(run.loop, tags={**run.loop.tags, **tags}))  # prepare_run's tags kept
    train.check_run_record(run)
    train.write_start_report(run)
    result = train.make_trainer(run, callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error
    outcome = train.collect_outcome(run, result)
    if outcome.mlflow_run_id:  # last: the trial counts as done only once its outputs are in place
        MlflowClient(run.loop.tracking_uri).set_tag(outcome.mlflow_run_id, tracking.TRIAL_END_TAG, "finished")


# --------------------------------------------------------------------------------------- the driver
@dataclass
class SweepOutcome:
    name: str
    parent_run_id: str
    tracking_uri: str
    experiment: str
    output: Path
    metric: str
    best_trial: str
    best_config: dict
    best_value: float
    trials: int
    errors: int
    wall_s: float
    trial_s: float  #: the trials' own times (Tune's time_total_s: start-up included) summed
    tune_path: str = ""  #: the latest Tune experiment's folder (trial states, errors)


def base_settings(settings: TuneSettings, base: TrainSettings, space: SearchSpace) -> TrainSettings:
    """Every trial's settings before the space's values: epochs and workers from the sweep."""
    epochs = settings.max_epochs or space.max_epochs or BENCHMARK.epochs
    check_epochs(space, epochs)
    return replace(base, epochs=epochs, workers=settings.workers_per_trial)


def run_sweep(settings: TuneSettings, base: TrainSettings, *, progress: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep ``settings`` describes; returns where its runs are and which trial won."""
    from pipelines.runtime.cluster import connect_ray, quiet_data_context

    started = time.perf_counter()
    space = load_space(settings.space)
    base = base_settings(settings, base, space)
    count = space.trial_count(settings.trials)
    data = prepare_dataset(base.data, base.taxonomy or None, progress=progress)
    check_for_data(space, base, data)
    name = settings.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = tracking.resolve_tracking_uri(base.tracking_uri or None)
    base = replace(base, tracking_uri=tracking_uri)
    connect_ray()
    quiet_data_context()
    concurrent = fit_concurrency(settings, base, count)
    with RunLock(resolve_storage(base.storage), name, "sweep") as lock:
        return sweep_under_lock(settings, space, base, data, name, count, concurrent, started, lock)


def sweep_under_lock(
    settings: TuneSettings,
    space: SearchSpace,
    base: TrainSettings,
    data: DatasetContext,
    name: str,
    count: int,
    concurrent: int,
    started: float,
    lock: RunLock | None = None,
) -> SweepOutcome:
    """The sweep itself, once its name is this process's alone in the storage."""
    configs = space.trial_configs(settings.trials, base.seed)
    parent = open_parent(base.tracking_uri, base.experiment, name, space, settings, configs)
    plan = SweepPlan(
        name,
        space,
        base,
        data,
        str(Path(settings.output or Path("runs") / name).resolve()),
        resolve_storage(base.storage),
        parent,
        configs,
    )
    tracking_uri = base.tracking_uri
    print(
        f"sweep {name}: {count} trials of {space.path} ({space.search} search, {space.scheduler} on {space.metric}, "
        f"{base.epochs} epochs at most), {concurrent} at a time; resume with --name {name}",
        flush=True,
    )
    try:
        results = unless_interrupted(fit_trials(plan, concurrent), name)
        if lock is not None:
            lock.check()  # still this sweep's name before its repeats and its verdict
        trials = trial_runs(plan)
        best = best_trial(trials, space.metric, tracking_uri)
        if settings.repeat_best and best is not None:
            seeds = repeat_configs(best[1], settings.repeat_best, next_seed(trials, base.seed))
            repeat = replace(plan, kind="repeat", repeat_of=best[0], configs=seeds)
            repeats = unless_interrupted(fit_trials(repeat, concurrent, name=f"{name}-repeat"), name)
            results = [*results, *repeats]
    except BaseException:
        tracking.end_if_running(tracking_uri, parent, "KILLED")
        raise
    return finish_sweep(
        plan, results, best, time.perf_counter() - started, count + settings.repeat_best * (best is not None)
    )


def check_for_data(space: SearchSpace, base: TrainSettings, data: DatasetContext) -> None:
    """Every grid point builds for this data, and reports the space's metric, before any trial starts."""
    level = space.metric.removeprefix("val_").split("_")[0]  # "level4" for val_level4_mf1, else "mf1"/...
    source = read_start(base)  # --init / --pretrained-s2, read once
    for combination in space.combinations():
        settings = trial_settings(base, combination, source=space.path)
        config = model_config_for(settings, data.taxonomy, data.spec, len(data.train_paths))
        plan_start(settings, config, data, source)  # the start weights fit, the streams to freeze exist
        if level.startswith("level") and int(level.removeprefix("level")) not in config.levels:
            raise SpaceError(
                f"{space.path}: metric: {space.metric} is not reported by {config.name}, which predicts levels {list(config.levels)}"
            )


def unless_interrupted(results, name: str):
    """Tune answers Ctrl-C by saving the sweep, stopping every trial and returning: an interruption, not an end."""
    from pipelines.sweeps.console import INTERRUPTED

    if INTERRUPTED.is_set():
        done = sum(1 for r in results if (r.metrics or {}).get("done"))
        print(
            f"sweep {name} interrupted ({done} of {len(results)} trials done); the same command with --name {name} resumes it",
            flush=True,
        )
        raise KeyboardInterrupt
    return results


def fit_concurrency(settings: TuneSettings, base: TrainSettings, count: int) -> int:
    """Trials at a time: as asked, lowered to what the cluster holds (one CPU left to Ray Data's reads); a
    trial that cannot fit at all is refused before anything starts."""
    import ray

    from pipelines.runtime.cluster import check_placement

    per_worker = {"CPU": base.cpus_per_worker, "GPU": 1 if base.use_gpu else 0}
    check_placement(
        per_worker,
        settings.workers_per_trial,
        "training worker",
        "trial's worker group",
        "lower --workers-per-trial or --cpus-per-worker, or drop --use-gpu",
    )
    per_trial = settings.workers_per_trial * base.cpus_per_worker + TRIAL_ACTOR["CPU"]
    cpus = ray.cluster_resources().get("CPU", 0)
    fits, limit = max(1, int((cpus - 1) // per_trial)), f"each needs {per_trial:g} CPU and the Ray cluster has {cpus:g}"
    gpus = ray.cluster_resources().get("GPU", 0)
    if base.use_gpu and gpus // settings.workers_per_trial < fits:
        fits, limit = (
            max(1, int(gpus // settings.workers_per_trial)),
            f"each needs {settings.workers_per_trial} GPU and the Ray cluster has {gpus:g}",
        )
    concurrent = min(settings.concurrent, count, fits)
    if concurrent < min(settings.concurrent, count):
        print(f"running {concurrent} trial(s) at a time, not {settings.concurrent}: {limit}", flush=True)
    return concurrent


def fit_trials(plan: SweepPlan, concurrent: int, name: str | None = None) -> list:
    """Run the plan's trials that are not done yet (a fresh Tune experiment each time, over their keys);
    returns Tune's results of this run's trials (none when every trial was done)."""
    from ray import tune

    from pipelines.runtime.cluster import verbose
    from pipelines.sweeps.console import SweepConsole

    name = name or plan.name
    runs = trial_runs(plan)
    done = done_keys(runs)
    pending = [key for key in plan.configs if key not in done]
    if done:
        print(
            f"resuming sweep {name}: {len(done)} of {len(plan.configs)} trials done and kept, {len(pending)} to run "
            f"(unfinished ones continue from their checkpoints in {plan.train_storage})",
            flush=True,
        )
    if not pending:
        return []
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), TRIAL_ACTOR)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # an interrupted sweep loses at most 2 s of trial states
    if not verbose():
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter honours verbose=0 (the new one prints a box)
    space = plan.space
    scheduler = (
        make_scheduler(space, plan.base.epochs, histories(runs, space.metric, plan.base.tracking_uri))
        if plan.kind == "trial"
        else None
    )
    console = SweepConsole(name, space.metric, plan.base.epochs, plan.base.tracking_uri, plan.varied(), plan.configs)
    folder = f"{plan.storage.rstrip('/')}/{name}"
    tuner = tune.Tuner(
        trainable,
        param_space={TRIAL_KEY: tune.grid_search(pending)},
        # no actor reuse: a stopped trial's actor must end, and with it the Train run it started
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode="max",
            scheduler=scheduler,
            num_samples=1,
            reuse_actors=False,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=lambda trial: trial.config[TRIAL_KEY],
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{len(attempts(folder)) + 1}",
            storage_path=folder,
            verbose=0,
            callbacks=[console],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    return list(tuner.fit())


def make_scheduler(space: SearchSpace, max_epochs: int, before: dict[str, dict[int, float]] | None = None):
    """ASHA on the epochs the trials report (a resumed trial goes on counting its epochs), its rungs holding
    what the trials of earlier runs of the sweep reported; or None (FIFO)."""
    if space.scheduler != "asha":
        return None
    from pipelines.sweeps.console import LastEpochKeptASHA

    scheduler = LastEpochKeptASHA(
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=space.grace_period,
        reduction_factor=space.reduction_factor,
        stop_last_trials=False,
    )
    scheduler.record_earlier(before or {})
    return scheduler


def trial_runs(plan: SweepPlan) -> list:
    """The MLflow runs of the plan's trials (or repeats)."""
    return child_runs(plan.base.tracking_uri, plan.base.experiment, plan.parent_run_id, plan.kind)


def repeat_configs(config: dict, repeats: int, first_seed: int) -> dict[str, dict]:
    """The best configuration with ``repeats`` seeds from ``first_seed`` on (none the sweep used): ``r0``, ..."""
    return {f"r{i}": {**config, "seed": first_seed + i} for i in range(repeats)}


def finish_sweep(
    plan: SweepPlan, results, best: tuple[str, dict, float] | None, wall_s: float, trials: int
) -> SweepOutcome:
    """End every child left RUNNING (nothing of the sweep runs now), tag the parent with the winner, close it."""
    from mlflow.tracking import MlflowClient

    uri, client = plan.base.tracking_uri, MlflowClient(plan.base.tracking_uri)
    experiment_id = tracking.ensure_experiment(uri, plan.base.experiment)
    for run in client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{plan.parent_run_id}' and attributes.status = 'RUNNING'",
    ):
        client.set_terminated(run.info.run_id, status="KILLED")
    errors = [result.error for result in results if result.error is not None]
    if best is None:
        client.set_terminated(plan.parent_run_id, status="FAILED")
        if errors:
            raise errors[0]
        raise SettingError(f"sweep {plan.name}: no trial reported {plan.space.metric}")
    trial_id, config, value = best
    client.set_tag(plan.parent_run_id, "best_trial", trial_id)
    client.set_tag(plan.parent_run_id, "best_config", json.dumps(config, sort_keys=True, default=str))
    client.log_metric(plan.parent_run_id, f"best_{plan.space.metric}", value)
    client.set_terminated(plan.parent_run_id, status="FINISHED")
    return SweepOutcome(
        plan.name,
        plan.parent_run_id,
        uri,
        plan.base.experiment,
        Path(plan.output),
        plan.space.metric,
        trial_id,
        config,
        value,
        trials,
        len(errors),
        wall_s,
        sum(float((r.metrics or {}).get("time_total_s", 0.0)) for r in results),
        latest_attempt(f"{plan.storage.rstrip('/')}/{plan.name}"),
    )
