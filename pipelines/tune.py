"""Sweeps: a space file -> Ray Tune trials, each a Ray Train run of the training steps, tracked in MLflow.

``run_sweep`` is what ``h2crop tune`` calls:

* the dataset (taxonomy, layout, statistics, splits) is prepared once, on the driver, for every trial;
* each trial is a Tune *function trainable* (:func:`run_trial`) that builds the trial's ``TorchTrainer``
  with ``TuneReportCallback`` (Train V2's pattern) and runs it; ASHA (or FIFO) decides on the space's
  metric after each epoch;
* the sweep is a parent MLflow run; each trial a child (``mlflow.parentRunId``) logged exactly as a
  training run is, plus its space values as the tag ``h2crop.config``. A trial stopped early ends KILLED,
  a failed one FAILED: never left RUNNING;
* re-running with the same ``--name`` and storage restores the sweep (``Tuner.restore``): finished trials
  are kept, unfinished ones continue from their Train checkpoints, errored ones run again;
* ``--repeat-best K`` trains the best configuration again with K other seeds (children tagged with the
  trial they repeat), so a comparison can show mean ± std.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.recipe import BENCHMARK
from h2crop_core.runlock import RunLock
from pipelines import tracking
from pipelines.settings import TrainSettings, TuneSettings
from pipelines.space import Choice, Range, SearchSpace, SpaceError, check_epochs, load_space, trial_settings
from pipelines.train import DatasetContext, model_config_for, prepare_dataset, resolve_storage

#: resources of the trial's own actor (it only waits on its Train run; Tune refuses zero)
TRIAL_ACTOR = {"CPU": 0.01}
TRIALS_FOLDER = "trials"


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
    kind: str = "trial"
    repeat_of: str = ""
    trials: int = 0  #: --trials (0: the space's own count)

    @property
    def train_storage(self) -> str:
        """Where the trials' Ray Train runs keep their checkpoints (beside the Tune experiment)."""
        return f"{self.storage.rstrip('/')}/{self.name}-{TRIALS_FOLDER}"

    def varied(self) -> list[str]:
        """The keys whose values tell the trials apart on the console."""
        keys = [k for k, p in self.space.params.items() if isinstance(p, (Choice, Range))]
        repeats = self.kind == "repeat" or self.space.trial_count(self.trials) > self.space.grid_size and self.space.search == "grid"
        return keys + (["seed"] if repeats and "seed" not in keys else [])


# -------------------------------------------------------------------------------------- one trial
def run_trial(config: dict, plan: SweepPlan) -> None:
    """The Tune trainable: one trial = one Ray Train run of the trial's settings."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train import collect_outcome, make_trainer, prepare_run

    trial_id = tune.get_context().get_trial_id()
    settings = trial_settings(plan.base, config, source=plan.space.path, run_name=f"{plan.name}-{trial_id}",
                              output=str(Path(plan.output) / TRIALS_FOLDER / trial_id), storage=plan.train_storage)
    run = prepare_run(settings, plan.data)
    tags = {tracking.PARENT_TAG: plan.parent_run_id, tracking.SWEEP_TAG: plan.name, tracking.KIND_TAG: plan.kind,
            tracking.CONFIG_TAG: json.dumps(config, sort_keys=True, default=str), "h2crop.trial_id": trial_id}
    if plan.repeat_of:
        tags["h2crop.repeat_of"] = plan.repeat_of
    run = replace(run, loop=replace(run.loop, tags={**run.loop.tags, **tags}))  # keep prepare_run's (the recipe's reason)
    result = make_trainer(run, callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error
    collect_outcome(run, result)


def _trial_dirname(trial) -> str:
    return trial.trial_id


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
    tune_path: str = ""  #: the Tune experiment folder (trial states, errors)


def base_settings(settings: TuneSettings, base: TrainSettings, space: SearchSpace) -> TrainSettings:
    """Every trial's settings before the space's values: epochs and workers from the sweep."""
    epochs = settings.max_epochs or space.max_epochs or BENCHMARK.epochs
    check_epochs(space, epochs)
    return replace(base, epochs=epochs, workers=settings.workers_per_trial)


def run_sweep(settings: TuneSettings, base: TrainSettings, *, progress: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep ``settings`` describes; returns where its runs are and which trial won."""
    from pipelines.ray_runtime import connect_ray, quiet_data_context

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
    with RunLock(resolve_storage(base.storage), name, "sweep"):
        return sweep_under_lock(settings, space, base, data, name, count, concurrent, started)


def sweep_under_lock(settings: TuneSettings, space: SearchSpace, base: TrainSettings, data: DatasetContext, name: str, count: int,
                     concurrent: int, started: float) -> SweepOutcome:
    """The sweep itself, once its name is this process's alone in the storage."""
    parent = open_parent(base.tracking_uri, base.experiment, name, space, settings, count)
    plan = SweepPlan(name, space, base, data, str(Path(settings.output or Path("runs") / name).resolve()), resolve_storage(base.storage), parent,
                     trials=settings.trials)
    tracking_uri = base.tracking_uri
    print(f"sweep {name}: {count} trials of {space.path} ({space.search} search, {space.scheduler} on {space.metric}, "
          f"{base.epochs} epochs at most), {concurrent} at a time; resume with --name {name}", flush=True)
    try:
        param_space, samples = space.param_space(settings.trials, base.seed)
        results = unless_interrupted(fit_trials(plan, param_space, samples, concurrent), name)
        trials = trial_runs(plan)
        best = best_trial(trials, space.metric, tracking_uri)
        if settings.repeat_best and best is not None:
            repeat = replace(plan, kind="repeat", repeat_of=best[0])
            seeds = repeat_space(best[1], settings.repeat_best, next_seed(trials, base.seed))
            repeats = unless_interrupted(fit_trials(repeat, seeds, 1, concurrent, name=f"{name}-repeat"), name)
            results = [*results, *repeats]
    except BaseException:
        tracking.end_if_running(tracking_uri, parent, "KILLED")
        raise
    return finish_sweep(plan, results, best, time.perf_counter() - started)


def check_for_data(space: SearchSpace, base: TrainSettings, data: DatasetContext) -> None:
    """Every grid point builds for this data, and reports the space's metric, before any trial starts."""
    level = space.metric.removeprefix("val_").split("_")[0]  # "level4" for val_level4_mf1, else "mf1"/...
    for combination in space.combinations():
        config = model_config_for(trial_settings(base, combination, source=space.path), data.taxonomy, data.spec)
        if level.startswith("level") and int(level.removeprefix("level")) not in config.levels:
            raise SpaceError(f"{space.path}: metric: {space.metric} is not reported by {config.name}, which predicts levels {list(config.levels)}")


def unless_interrupted(results, name: str):
    """Tune answers Ctrl-C by saving the sweep, stopping every trial and returning: an interruption, not an end."""
    from pipelines.sweep_console import INTERRUPTED

    if INTERRUPTED.is_set():
        done = sum(1 for r in results if (r.metrics or {}).get("done"))
        print(f"sweep {name} interrupted ({done} of {len(results)} trials done); the same command with --name {name} resumes it", flush=True)
        raise KeyboardInterrupt
    return results


def fit_concurrency(settings: TuneSettings, base: TrainSettings, count: int) -> int:
    """Trials at a time: as asked, lowered to what the cluster holds (one CPU left to Ray Data's reads); a
    trial that cannot fit at all is refused before anything starts."""
    import ray

    from pipelines.ray_runtime import check_placement

    per_worker = {"CPU": base.cpus_per_worker, "GPU": 1 if base.use_gpu else 0}
    check_placement(per_worker, settings.workers_per_trial, "training worker", "trial's worker group",
                    "lower --workers-per-trial or --cpus-per-worker, or drop --use-gpu")
    per_trial = settings.workers_per_trial * base.cpus_per_worker + TRIAL_ACTOR["CPU"]
    cpus = ray.cluster_resources().get("CPU", 0)
    fits, limit = max(1, int((cpus - 1) // per_trial)), f"each needs {per_trial:g} CPU and the Ray cluster has {cpus:g}"
    gpus = ray.cluster_resources().get("GPU", 0)
    if base.use_gpu and gpus // settings.workers_per_trial < fits:
        fits, limit = max(1, int(gpus // settings.workers_per_trial)), f"each needs {settings.workers_per_trial} GPU and the Ray cluster has {gpus:g}"
    concurrent = min(settings.concurrent, count, fits)
    if concurrent < min(settings.concurrent, count):
        print(f"running {concurrent} trial(s) at a time, not {settings.concurrent}: {limit}", flush=True)
    return concurrent


def open_parent(tracking_uri: str, experiment: str, name: str, space: SearchSpace, settings: TuneSettings, count: int) -> str:
    """The sweep's parent run: created, or (resuming) found again, after checking that its space file still
    says the same."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = tracking.ensure_experiment(tracking_uri, experiment)
    query = f"tags.`{tracking.SWEEP_TAG}` = '{name}' and tags.`{tracking.KIND_TAG}` = 'sweep'"
    for run in client.search_runs([experiment_id], filter_string=query):
        if run.data.params.get("space_digest") != space.digest:
            raise SpaceError(f"{space.path}: sweep {name} was started from a different space file "
                             f"({run.data.params.get('space')}, digest {run.data.params.get('space_digest')}): use another --name")
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={tracking.KIND_TAG: "sweep", tracking.SWEEP_TAG: name, tracking.RUN_NAME_TAG: name})
    params = {"space": space.path, "space_digest": space.digest, "search": space.search, "scheduler": space.scheduler, "metric": space.metric,
              "trials": count, "grace_period": space.grace_period, "reduction_factor": space.reduction_factor,
              "workers_per_trial": settings.workers_per_trial, "concurrent": settings.concurrent, "repeat_best": settings.repeat_best}
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value))
    client.log_artifact(run.info.run_id, space.path, artifact_path="space")
    return run.info.run_id


def fit_trials(plan: SweepPlan, param_space: dict, num_samples: int, concurrent: int, name: str | None = None):
    """Run the trials (restoring the Tune experiment ``name`` if it exists); returns Tune's ResultGrid."""
    from ray import tune

    from pipelines.ray_runtime import verbose
    from pipelines.sweep_console import SweepConsole

    name = name or plan.name
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), TRIAL_ACTOR)
    path = f"{plan.storage.rstrip('/')}/{name}"
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # an interrupted sweep loses at most 2 s of trial states
    if not verbose():
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter honours verbose=0 (the new one prints a box)
    if tune.Tuner.can_restore(path):
        print(f"resuming sweep {name} from {path}: finished trials are kept, errored ones run again", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True)
    else:
        space = plan.space
        scheduler = make_scheduler(space, plan.base.epochs) if plan.kind == "trial" else None  # repeats all run to the end
        console = SweepConsole(name, space.metric, plan.base.epochs, plan.base.tracking_uri, plan.varied())
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            # no actor reuse: a stopped trial's actor must end, and with it the Train run it started
            tune_config=tune.TuneConfig(metric=space.metric, mode="max", scheduler=scheduler, num_samples=num_samples, reuse_actors=False,
                                        max_concurrent_trials=concurrent, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=name, storage_path=plan.storage, verbose=0, callbacks=[console],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    return tuner.fit()


def make_scheduler(space: SearchSpace, max_epochs: int):
    """ASHA on the epochs the trials report (a restored trial goes on counting its epochs), or None (FIFO)."""
    if space.scheduler != "asha":
        return None
    from pipelines.sweep_console import LastEpochKeptASHA

    return LastEpochKeptASHA(time_attr="epoch", max_t=max_epochs, grace_period=space.grace_period, reduction_factor=space.reduction_factor,
                             stop_last_trials=False)


def trial_runs(plan: SweepPlan) -> list:
    """The MLflow runs of the sweep's trials: every epoch they logged, across restores (Tune's own results
    of a resumed trial hold only what it reported since)."""
    from mlflow.tracking import MlflowClient

    uri = plan.base.tracking_uri
    query = f"tags.`{tracking.PARENT_TAG}` = '{plan.parent_run_id}' and tags.`{tracking.KIND_TAG}` = 'trial'"
    return MlflowClient(uri).search_runs([tracking.ensure_experiment(uri, plan.base.experiment)], filter_string=query, max_results=10_000)


def next_seed(runs: list, base_seed: int) -> int:
    """The first seed no trial of the sweep has used."""
    return 1 + max([base_seed] + [int(run.data.params.get("settings.seed", base_seed)) for run in runs])


def repeat_space(config: dict, repeats: int, first_seed: int) -> dict:
    """The best configuration with ``repeats`` seeds from ``first_seed`` on (none the sweep used)."""
    from ray import tune

    return {**config, "seed": tune.grid_search([first_seed + i for i in range(repeats)])}


def best_trial(runs: list, metric: str, tracking_uri: str) -> tuple[str, dict, float] | None:
    """(trial id, space values, best value of ``metric`` over its epochs) of the best trial, or None."""
    from mlflow.tracking import MlflowClient

    client, best = MlflowClient(tracking_uri), None
    for run in runs:
        values = [m.value for m in client.get_metric_history(run.info.run_id, metric) if m.value == m.value]
        if values and (best is None or max(values) > best[2]):
            best = (run.data.tags["h2crop.trial_id"], json.loads(run.data.tags[tracking.CONFIG_TAG]), max(values))
    return best


def finish_sweep(plan: SweepPlan, results, best: tuple[str, dict, float] | None, wall_s: float) -> SweepOutcome:
    """End every child left RUNNING (nothing of the sweep runs now), tag the parent with the winner, close it."""
    from mlflow.tracking import MlflowClient

    uri, client = plan.base.tracking_uri, MlflowClient(plan.base.tracking_uri)
    experiment_id = tracking.ensure_experiment(uri, plan.base.experiment)
    for run in client.search_runs([experiment_id], filter_string=f"tags.`{tracking.PARENT_TAG}` = '{plan.parent_run_id}' and attributes.status = 'RUNNING'"):
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
    return SweepOutcome(plan.name, plan.parent_run_id, uri, plan.base.experiment, Path(plan.output), plan.space.metric, trial_id, config, value,
                        len(results), len(errors), wall_s, sum(float((r.metrics or {}).get("time_total_s", 0.0)) for r in results),
                        f"{plan.storage.rstrip('/')}/{plan.name}")

