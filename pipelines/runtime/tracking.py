"""MLflow: where runs go, how a run is found again on resume, and what gets logged.

Locally runs go to ``sqlite:///<cwd>/mlruns.db`` with artifacts in ``<cwd>/mlartifacts`` (MLflow 3 closed
its file store). On a cluster point ``--tracking-uri`` at an ``mlflow server`` every node can reach (a
sqlite file only works when every writer shares the filesystem).

A training run keeps one MLflow run: its id travels in the checkpoints, so a restarted worker group or a
re-run of the same command (same ``--run-name`` and storage) continues it instead of creating another. The
h2crop run name is also a tag (``h2crop.run_name``) for searching.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

RUN_NAME_TAG = "h2crop.run_name"
#: what a run is: train, sweep (a sweep's parent run), trial, repeat (the best trial with another seed)
KIND_TAG = "h2crop.kind"
SWEEP_TAG = "h2crop.sweep"
CONFIG_TAG = "h2crop.config"  #: a trial's space values as JSON
TRIAL_ID_TAG = "h2crop.trial_id"  #: a trial's key in its sweep's list (t00, t01, ...; r0, ... for repeats)
#: set on a trial's run once it is done: "finished" (its outputs in place) or "stopped" (by ASHA)
TRIAL_END_TAG = "h2crop.trial_end"
PARENT_TAG = "mlflow.parentRunId"  #: MLflow's own nesting tag (the UI shows children under it)
DEFAULT_EXPERIMENT = "h2crop"


def resolve_tracking_uri(uri: str | None) -> str:
    """Absolute tracking URI: Ray workers run in other working directories, so relative paths break."""
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlruns.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if uri.startswith("databricks"):
        return uri
    if "://" not in uri:  # a bare path: treat as a sqlite file
        return f"sqlite:///{Path(uri).resolve()}"
    return uri


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<dir of the sqlite file>/mlartifacts`` for local sqlite stores; the server decides otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def open_run(
    tracking_uri: str, experiment: str, run_name: str, params: dict, tags: dict, run_id: str | None = None
) -> str:
    """Start the MLflow run in this process, or continue ``run_id`` (a resumed training); returns its id.

    Params are logged only when the run is new (MLflow refuses to change a logged param).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    flat = flatten(params)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment)
    run_id = run_id or _unfinished_run(client, experiment_id, run_name, flat)
    if run_id:
        run = mlflow.start_run(run_id=run_id)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name})
        mlflow.log_params(flat)
    mlflow.set_tags(tags)
    return run.info.run_id


def ensure_experiment(tracking_uri: str, experiment: str) -> str:
    """The id of ``experiment``, created (artifacts beside a local sqlite store) if new."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return (
        found.experiment_id
        if found
        else client.create_experiment(experiment, artifact_location=default_artifact_location(tracking_uri))
    )


def _unfinished_run(client, experiment_id: str, run_name: str, params: dict[str, str]) -> str | None:
    """A run of this name that never finished and has exactly these params: the same run started again
    before its first checkpoint (a restarted worker group, an interrupted sweep trial). Continued rather
    than duplicated."""
    for run in client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'"):
        if run.info.status != "FINISHED" and run.data.params == params:
            return run.info.run_id
    return None


def end_if_running(tracking_uri: str, run_id: str, status: str) -> bool:
    """Mark a run that is still RUNNING as ended with ``status`` (e.g. KILLED: a trial stopped early whose
    worker was stopped before it could end its run). Returns whether it changed anything."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if not run_id or client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_terminated(run_id, status=status)
    return True


def log_epoch(metrics: dict, step: int) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}, step=step)


def close_run(status: str = "FINISHED") -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run(status=status)


def log_artifacts(tracking_uri: str, run_id: str, files: list[Path], folder: str | None = None) -> None:
    """Attach files to a run from any process (e.g. the driver after training)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=folder)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the code being run (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
