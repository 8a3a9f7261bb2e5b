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
from pipelines.sweeps.space import Choice, Range, SearchSpace, SpaceError, check_epochs, load_space, trial_settings
from pipelines.training.train import DatasetContext, model_config_for, prepare_dataset, resolve_storage

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

    from pipelines.training.train import collect_outcome, make_trainer, prepare_run

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
    run = prepare_run(settings, plan.data)
    tags = {
        tracking.PARENT_TAG: plan.parent_run_id,
        tracking.SWEEP_TAG: plan.name,
        tracking.KIND_TAG: plan.kind,
        tracking.CONFIG_TAG: json.dumps(values, sort_keys=True, default=str),
        tracking.TRIAL_ID_TAG: key,
    }
    if plan.repeat_of:
        tags["h2crop.repeat_of"] = plan.repeat_of
    run = replace(
        run, loop=replace(run.loop, tags={**run.loop.tags, **tags})
    )  # keep prepare_run's (the recipe's reason)
    result = make_trainer(run, callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error
    outcome = collect_outcome(run, result)
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
    with RunLock(resolve_storage(base.storage), name, "sweep"):
        return sweep_under_lock(settings, space, base, data, name, count, concurrent, started)


def sweep_under_lock(
    settings: TuneSettings,
    space: SearchSpace,
    base: TrainSettings,
    data: DatasetContext,
    name: str,
    count: int,
    concurrent: int,
    started: float,
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
    for combination in space.combinations():
        config = model_config_for(trial_settings(base, combination, source=space.path), data.taxonomy, data.spec)
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


def open_parent(
    tracking_uri: str, experiment: str, name: str, space: SearchSpace, settings: TuneSettings, configs: dict[str, dict]
) -> str:
    """The sweep's parent run: created with its list of trials (``trials.json``), or (resuming) found again
    after checking that its space file and its list of trials are still the same."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = tracking.ensure_experiment(tracking_uri, experiment)
    query = f"tags.`{tracking.SWEEP_TAG}` = '{name}' and tags.`{tracking.KIND_TAG}` = 'sweep'"
    for run in client.search_runs([experiment_id], filter_string=query):
        if run.data.params.get("space_digest") != space.digest:
            raise SpaceError(
                f"{space.path}: sweep {name} was started from a different space file "
                f"({run.data.params.get('space')}, digest {run.data.params.get('space_digest')}): use another --name"
            )
        check_trial_list(client, run, name, configs)
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={tracking.KIND_TAG: "sweep", tracking.SWEEP_TAG: name, tracking.RUN_NAME_TAG: name},
    )
    params = {
        "space": space.path,
        "space_digest": space.digest,
        "search": space.search,
        "scheduler": space.scheduler,
        "metric": space.metric,
        "trials": len(configs),
        "grace_period": space.grace_period,
        "reduction_factor": space.reduction_factor,
        "workers_per_trial": settings.workers_per_trial,
        "concurrent": settings.concurrent,
        "repeat_best": settings.repeat_best,
    }
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value))
    client.log_artifact(run.info.run_id, space.path, artifact_path="space")
    client.log_dict(run.info.run_id, configs, f"space/{TRIALS_FILE}")
    return run.info.run_id


TRIALS_FILE = "trials.json"


def check_trial_list(client, run, name: str, configs: dict[str, dict]) -> None:
    """A resumed sweep runs the list it started with: another --trials or --seed would change it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            stored = json.loads(
                Path(client.download_artifacts(run.info.run_id, f"space/{TRIALS_FILE}", folder)).read_text()
            )
        except (OSError, ValueError, Exception) as error:  # noqa: BLE001 - MLflow raises its own types for a missing artifact
            raise SettingError(
                f"sweep {name}: its list of trials (space/{TRIALS_FILE} of MLflow run {run.info.run_id}) "
                f"cannot be read ({type(error).__name__}): use another --name"
            ) from None
    if stored != json.loads(json.dumps(configs)):
        raise SettingError(
            f"sweep {name} was started with {len(stored)} trials (params trials={run.data.params.get('trials')}); "
            f"these settings give {len(configs)} other ones: resume with the first run's --trials and --seed, or use another --name"
        )


def fit_trials(plan: SweepPlan, concurrent: int, name: str | None = None) -> list:
    """Run the plan's trials that are not done yet (a fresh Tune experiment each time, over their keys);
    returns Tune's results of this run's trials (none when every trial was done)."""
    from ray import tune

    from pipelines.runtime.cluster import verbose
    from pipelines.sweeps.console import SweepConsole

    name = name or plan.name
    runs = trial_runs(plan)
    done = {run.data.tags[tracking.TRIAL_ID_TAG] for run in runs if run.data.tags.get(tracking.TRIAL_END_TAG)}
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


def attempts(folder: str) -> list[str]:
    """The Tune experiments an earlier run of the sweep left in ``folder`` (one per start or resume)."""
    from pyarrow import fs

    from h2crop_core.storage import filesystem

    system, root = filesystem(folder)
    infos = system.get_file_info(fs.FileSelector(root, allow_not_found=True))
    names = [
        i.base_name for i in infos if i.type == fs.FileType.Directory and i.base_name.removeprefix("attempt-").isdigit()
    ]
    return sorted(names, key=lambda n: int(n.removeprefix("attempt-")))


def histories(runs: list, metric: str, tracking_uri: str) -> dict[str, dict[int, float]]:
    """Each trial's ``metric`` per epoch as MLflow holds it (what ASHA compared before a resume)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {
        run.data.tags[tracking.TRIAL_ID_TAG]: {
            int(m.step): m.value for m in client.get_metric_history(run.info.run_id, metric)
        }
        for run in runs
    }


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
    """The MLflow runs of the plan's trials (or repeats): every epoch they logged, across resumes (Tune's
    own results of a resumed trial hold only what it reported since)."""
    from mlflow.tracking import MlflowClient

    uri = plan.base.tracking_uri
    query = f"tags.`{tracking.PARENT_TAG}` = '{plan.parent_run_id}' and tags.`{tracking.KIND_TAG}` = '{plan.kind}'"
    return MlflowClient(uri).search_runs(
        [tracking.ensure_experiment(uri, plan.base.experiment)], filter_string=query, max_results=10_000
    )


def next_seed(runs: list, base_seed: int) -> int:
    """The first seed no trial of the sweep has used."""
    return 1 + max([base_seed] + [int(run.data.params.get("settings.seed", base_seed)) for run in runs])


def repeat_configs(config: dict, repeats: int, first_seed: int) -> dict[str, dict]:
    """The best configuration with ``repeats`` seeds from ``first_seed`` on (none the sweep used): ``r0``, ..."""
    return {f"r{i}": {**config, "seed": first_seed + i} for i in range(repeats)}


def best_trial(runs: list, metric: str, tracking_uri: str) -> tuple[str, dict, float] | None:
    """(trial id, space values, best value of ``metric`` over its epochs) of the best trial, or None."""
    from mlflow.tracking import MlflowClient

    client, best = MlflowClient(tracking_uri), None
    for run in runs:
        values = [m.value for m in client.get_metric_history(run.info.run_id, metric) if m.value == m.value]
        if values and (best is None or max(values) > best[2]):
            best = (run.data.tags[tracking.TRIAL_ID_TAG], json.loads(run.data.tags[tracking.CONFIG_TAG]), max(values))
    return best


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


def latest_attempt(folder: str) -> str:
    """The folder of the sweep's latest Tune experiment (its trials' states and errors)."""
    return f"{folder}/{(attempts(folder) or ['attempt-1'])[-1]}"
