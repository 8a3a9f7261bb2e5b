"""A sweep's own record, kept in MLflow and its storage rather than in Tune's search state.

* the parent run holds the list of trials the space gives (``space/trials.json``), checked on resume;
* each trial is a child run tagged with its key (``h2crop.trial_id``), done once it carries
  ``h2crop.trial_end`` (``finished``: its outputs are in place; ``stopped``: ASHA stopped it);
* each start or resume of the sweep is a Tune experiment ``attempt-N`` in the sweep's storage folder.

A resumed sweep reads which trials are done here, so it never waits on a restored Tune searcher.
"""

from __future__ import annotations

import json
from pathlib import Path

from h2crop_core.errors import SettingError
from pipelines.runtime import tracking
from pipelines.settings import TuneSettings
from pipelines.sweeps.space import SearchSpace, SpaceError

TRIALS_FILE = "trials.json"


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


def next_seed(runs: list, base_seed: int) -> int:
    """The first seed no trial of the sweep has used."""
    return 1 + max([base_seed] + [int(run.data.params.get("settings.seed", base_seed)) for run in runs])


def best_trial(runs: list, metric: str, tracking_uri: str) -> tuple[str, dict, float] | None:
    """(trial id, space values, best value of ``metric`` over its epochs) of the best trial, or None."""
    from mlflow.tracking import MlflowClient

    client, best = MlflowClient(tracking_uri), None
    for run in runs:
        values = [m.value for m in client.get_metric_history(run.info.run_id, metric) if m.value == m.value]
        if values and (best is None or max(values) > best[2]):
            best = (run.data.tags[tracking.TRIAL_ID_TAG], json.loads(run.data.tags[tracking.CONFIG_TAG]), max(values))
    return best


def latest_attempt(folder: str) -> str:
    """The folder of the sweep's latest Tune experiment (its trials' states and errors)."""
    return f"{folder}/{(attempts(folder) or ['attempt-1'])[-1]}"


def child_runs(tracking_uri: str, experiment: str, parent_run_id: str, kind: str) -> list:
    """The MLflow runs of a sweep's trials (``kind`` trial) or repeats: every epoch they logged, across
    resumes (Tune's own results of a resumed trial hold only what it reported since)."""
    from mlflow.tracking import MlflowClient

    query = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and tags.`{tracking.KIND_TAG}` = '{kind}'"
    experiment_id = tracking.ensure_experiment(tracking_uri, experiment)
    return MlflowClient(tracking_uri).search_runs([experiment_id], filter_string=query, max_results=10_000)


def done_keys(runs: list) -> set[str]:
    """The keys of the trials that are done: finished with their outputs in place, or stopped by ASHA."""
    return {run.data.tags[tracking.TRIAL_ID_TAG] for run in runs if run.data.tags.get(tracking.TRIAL_END_TAG)}
