"""Ray training: learning, checkpoints, MLflow, resume, and a killed worker, on a local Ray."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from h2crop_core.checkpoint import load_checkpoint
from h2crop_core.errors import SettingError
from pipelines.settings import TrainSettings, parse_overrides
from pipelines.steps import lr_factor
from pipelines.tracking import RUN_NAME_TAG
from pipelines.train import run_training

pytestmark = pytest.mark.ray


def _settings(data: Path, tmp_path: Path, run_name: str, **changes) -> TrainSettings:
    values = dict(
        data=str(data),
        preset="tiny_crops_S2_H_P_jun",
        epochs=2,
        batch_size=2,
        lr=2e-3,
        warmup_iters=0,
        workers=2,
        loader_workers=0,
        run_name=run_name,
        storage=str(tmp_path / "storage"),
        output=str(tmp_path / "out" / run_name),
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
    )
    values.update(changes)
    return TrainSettings(**values)


def _history(settings: TrainSettings, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient(settings.tracking_uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def test_training_learns_writes_checkpoints_tracks_and_resumes(ray_local, train_data, tmp_path):
    settings = _settings(train_data, tmp_path, "learn")
    outcome = run_training(settings)
    assert outcome.epochs_done == 2
    loaded = load_checkpoint(outcome.best_checkpoint)
    assert loaded.config.name == "tiny_crops_S2_H_P_jun" and loaded.spec.size == 96
    assert (outcome.output / "metrics.json").is_file() and (outcome.output / "confusion_level4.png").is_file()
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.data.params["settings.preset"] == "tiny_crops_S2_H_P_jun" and run.data.params["model.window"] == "jun"
    assert {"preset", "window", "modalities", "git_commit", "dataset_fingerprint"} <= set(run.data.tags)
    for level in range(1, 5):
        assert len(_history(settings, run.info.run_id, f"val_level{level}_mf1")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "best")}
    assert "best/best.ckpt" in artifacts

    # the same command with the same run name and more epochs continues the run
    settings.epochs = 4
    resumed = run_training(settings)
    assert resumed.epochs_done == 4 and resumed.mlflow_run_id == outcome.mlflow_run_id
    losses = _history(settings, run.info.run_id, "train_loss")
    assert len(losses) == 4 and losses[-1] < losses[0]  # it learns
    assert _history(settings, run.info.run_id, "resumed_from_epoch") == [2]
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = 'learn'")
    assert len(runs) == 1


def _own_train_worker_pids(job_id: str) -> list[int]:
    """PIDs of the live Ray Train workers of this test's own Ray job (from Ray's state API): never a
    process of anyone else on the machine."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE"), ("job_id", "=", job_id)])
    return [actor.pid for actor in actors if actor.pid]


def _kill_a_worker_after_first_checkpoint(storage: Path, run_name: str, killed: list, job_id: str) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and not list((storage / run_name).glob("checkpoint_*")):
        time.sleep(0.2)
    time.sleep(2.5)  # let the controller register the report before the failure (RAY_NOTES.md)
    pids = _own_train_worker_pids(job_id)
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])


def test_a_killed_worker_is_replaced_and_an_interrupted_run_resumes(ray_local, train_data, tmp_path, capsys):
    # with a failure budget the worker group restarts from the last checkpoint and finishes
    import ray
    import ray.train

    job_id = ray.get_runtime_context().get_job_id()
    settings = _settings(train_data, tmp_path, "survive", epochs=4, max_failures=1)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(tmp_path / "storage", "survive", killed, job_id))
    killer.start()
    outcome = run_training(settings)
    killer.join()
    assert killed, "no Ray Train worker process was found to kill"
    assert outcome.epochs_done == 4
    assert _history(settings, outcome.mlflow_run_id, "resumed_from_epoch")
    out = capsys.readouterr().out  # the console says what happened, though workers' own output is not forwarded
    assert "failed" in out and "restarting the workers from the last checkpoint" in out
    assert "[h2crop] resuming survive after epoch" in out and "[h2crop] epoch 4/4:" in out

    # without one the run stops; the same command then resumes from the saved epoch
    settings = _settings(train_data, tmp_path, "interrupted", epochs=3, max_failures=0)
    killed.clear()
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(tmp_path / "storage", "interrupted", killed, job_id))
    killer.start()
    with pytest.raises(ray.train.TrainingFailedError):
        run_training(settings)
    killer.join()
    assert killed
    saved = len(list((tmp_path / "storage" / "interrupted").glob("checkpoint_*")))
    assert saved >= 1
    outcome = run_training(settings)
    assert outcome.epochs_done == 3
    resumed = _history(settings, outcome.mlflow_run_id, "resumed_from_epoch")
    assert resumed and resumed[0] >= 1


def test_learning_rate_schedule_warms_up_then_decays():
    values = [lr_factor(step, 100, 10, 0.01, 0.1) for step in range(101)]
    assert values[0] == pytest.approx(0.01) and values[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[100] == pytest.approx(0.1)


def test_overrides_are_typed_and_checked():
    assert parse_overrides(["precision=bf16", "s2_depths=[2,2,2,2]", "spatial_patch=2"]) == {
        "precision": "bf16",
        "s2_depths": (2, 2, 2, 2),
        "spatial_patch": 2,
    }
    with pytest.raises(SettingError, match="not a model setting"):
        parse_overrides(["learning_rate=3"])
    with pytest.raises(SettingError, match="key=value"):
        parse_overrides(["precision"])


def test_a_bad_file_is_named_from_a_process_pool_and_from_a_ray_worker(ray_local, train_data, tmp_path, capsys):
    import shutil

    from h2crop_core.data.index import DatasetIndex
    from pipelines.cli import main

    root = Path(shutil.copytree(train_data, tmp_path / "data"))
    (root / "norm_stats.json").unlink()
    index = DatasetIndex(root)
    bad = index.split_paths("train")[1]
    good = bad.read_bytes()
    bad.write_bytes(good[:5000])  # truncated: found while computing the statistics, in a process pool
    command = ["train", "--data", str(root), "--preset", "tiny_crops_S2_H_P_jun", "--epochs", "1", "--workers", "2", "--batch-size", "2",
               "--storage", str(tmp_path / "storage"), "--output", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}",
               "--max-failures", "0", "--quiet"]
    assert main(command + ["--run-name", "pool"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"h2crop train: error: {bad}") and "truncated or corrupt" in err and "Traceback" not in err

    bad.write_bytes(good)
    val = index.split_paths("val")[0]
    val.write_bytes(val.read_bytes()[:5000])  # found by a DataLoader worker inside a Ray Train worker
    assert main(command + ["--run-name", "worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"h2crop train: error: {val}") and "Traceback" not in err
