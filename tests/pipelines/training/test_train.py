"""Ray training on a local Ray: learning, checkpoints, MLflow, resume, one run per name. A killed worker, a
lost node and a killed job rerun are tested on the two-node cluster (test_cluster.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyarrow.fs import FileSelector

from h2crop_core.checkpoint import load_checkpoint
from h2crop_core.errors import SettingError
from h2crop_core.products.contract import CONTRACT_FILE, InputContract
from h2crop_core.recipe import lr_factor
from h2crop_core.storage import Remote
from pipelines.runtime.tracking import RUN_NAME_TAG
from pipelines.settings import TrainSettings, parse_overrides
from pipelines.training.train import run_training

pytestmark = pytest.mark.ray
SNAPSHOT = "checkpoint_manager_snapshot.json"  #: Train's record of its committed checkpoints


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
    return [
        m.value
        for m in sorted(
            MlflowClient(settings.tracking_uri).get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)
        )
    ]


def _wait_until_idle(ray, timeout: float = 120) -> None:
    """A killed driver's Train workers are gone once Ray has their CPUs back."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] - 1e-6:
        assert time.monotonic() < deadline, f"the killed run's resources were not released: {ray.available_resources()}"
        time.sleep(0.2)


def test_training_learns_into_a_bucket_and_a_killed_run_resumes_from_it(ray_local, train_data, s3_bucket, tmp_path):
    settings = _settings(train_data, tmp_path, "learn", epochs=3, storage=f"{s3_bucket}/runs")
    argv = [
        "train",
        "--data",
        settings.data,
        "--preset",
        settings.preset,
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "2e-3",
        "--warmup-iters",
        "0",
        "--workers",
        "2",
        "--loader-workers",
        "0",
        "--run-name",
        "learn",
        "--storage",
        settings.storage,
        "--output",
        settings.output,
        "--tracking-uri",
        settings.tracking_uri,
    ]
    # `h2crop train` as a user runs it, killed (SIGKILL: no clean-up) once Train has committed a checkpoint
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli.main", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    run_folder, storage = Remote(f"{settings.storage}/learn"), Remote(settings.storage)
    try:
        deadline = time.monotonic() + 240
        while not run_folder.exists(SNAPSHOT) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(30)
    assert run_folder.exists(SNAPSHOT), driver.stderr.read().decode()[-3000:]
    assert storage.names(".h2crop_locks/learn")  # the killed holder's lock is left behind
    _wait_until_idle(ray_local)

    outcome = run_training(
        settings
    )  # the same command: the dead holder's lock is stale, the run resumes from the bucket
    assert outcome.epochs_done == 3
    loaded = load_checkpoint(outcome.best_checkpoint)
    assert loaded.config.name == "tiny_crops_S2_H_P_jun" and loaded.spec.size == 96
    assert loaded.contract == InputContract.from_json(train_data / CONTRACT_FILE)  # the dataset's, carried
    assert (outcome.output / "metrics.json").is_file() and (outcome.output / "confusion_level4.png").is_file()
    stored = [info.path for info in run_folder.fs.get_file_info(FileSelector(run_folder.root, recursive=True))]
    assert any(path.endswith("/model.ckpt") for path in stored)  # Train's checkpoints are in the bucket
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(
        outcome.mlflow_run_id
    )  # the killed run's MLflow run, continued (its id travels in the checkpoint)
    assert run.data.params["settings.preset"] == "tiny_crops_S2_H_P_jun" and run.data.params["model.window"] == "jun"
    assert {"preset", "window", "modalities", "git_commit", "dataset_fingerprint"} <= set(run.data.tags)
    assert len(client.search_runs([run.info.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = 'learn'")) == 1
    resumed = _history(settings, run.info.run_id, "resumed_from_epoch")
    assert len(resumed) == 1 and resumed[0] >= 1
    for level in range(1, 5):
        assert (
            len(_history(settings, run.info.run_id, f"val_level{level}_mf1")) == 3
        )  # each epoch once, across the kill
    losses = _history(settings, run.info.run_id, "train_loss")
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learns
    assert "best/best.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id, "best")}
    assert not storage.names(".h2crop_locks/learn")  # released


def test_a_training_whose_name_is_in_use_is_refused_before_it_starts(ray_local, train_data, tmp_path):
    from h2crop_core.runlock import RunInUse, RunLock

    settings = _settings(train_data, tmp_path, "taken")
    with (
        RunLock(settings.storage, "taken", "training"),
        pytest.raises(RunInUse, match="training name 'taken' is in use"),
    ):
        run_training(settings)
    assert not (tmp_path / "storage" / "taken").exists() and not (tmp_path / "out" / "taken").exists()


def test_early_stopping_ends_a_run_that_stops_improving_and_keeps_its_best_checkpoint(ray_local, train_data, tmp_path):
    # an lr too small to learn: validation mF1 plateaus at once (it moves only with BatchNorm's statistics),
    # so with patience 1 the run ends at the first epoch that does not beat the best, long before --epochs
    settings = _settings(train_data, tmp_path, "plateau", epochs=12, lr=1e-9, patience=1, workers=1, cutmix_p=0.0)
    outcome = run_training(settings, progress=False)
    history = _history(settings, outcome.mlflow_run_id, "val_mf1")
    best_epoch = outcome.best_metrics["epoch"]
    assert outcome.epochs_done < 12 and len(history) == outcome.epochs_done
    assert outcome.epochs_done == best_epoch + 1  # one epoch without a better score, then stop
    assert history[best_epoch - 1] == max(history) and all(v <= max(history) for v in history[best_epoch:])
    kept = load_checkpoint(outcome.best_checkpoint)
    assert kept.meta["epoch"] == best_epoch  # the best epoch's weights, not the last epoch's
    assert kept.meta["val"]["val_mf1"] == pytest.approx(max(history))
    reported = json.loads((outcome.output / "metrics.json").read_text())
    assert reported["settings"]["epoch"] == best_epoch and reported["settings"]["decode"] == "consistent"
    # the run's numbers are evaluate's on the same split with its default decode: one set of numbers
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics

    evaluation = evaluate_checkpoint(outcome.best_checkpoint, train_data, "val", batch_size=2, progress=False)
    evaluated = build_metrics(evaluation.confusion, "val", extra=evaluation.extra)
    assert evaluation.extra["decode"] == "consistent"
    for level, values in reported["levels"].items():
        assert {k: evaluated["levels"][level][k] for k in ("oa", "mf1", "miou")} == pytest.approx(
            {k: values[k] for k in ("oa", "mf1", "miou")}, abs=1e-12
        ), level


def test_a_budgeted_run_ends_its_cosine_within_the_budget_and_resumes_only_as_it_started(
    ray_local, train_data, tmp_path, capsys
):
    import shutil

    import h5py

    from pipelines.cli.main import main

    # 40 epochs of 5 steps planned, 18 s hold a few: after epoch 1 the cosine is fitted to them, so the run
    # ends at the schedule's last step (min_lr) instead of being cut off near its peak
    data = Path(shutil.copytree(train_data, tmp_path / "data", copy_function=shutil.copy2))
    settings = _settings(
        data, tmp_path, "budget", epochs=40, recipe="benchmark", workers=1, time_budget_minutes=0.3, cutmix_p=0.0
    )
    outcome = run_training(settings, progress=False)
    steps, lrs = (_history(settings, outcome.mlflow_run_id, key) for key in ("schedule_steps", "lr"))
    seconds = _history(settings, outcome.mlflow_run_id, "epoch_seconds")
    assert steps[0] == 200 and steps[-1] == 5 * outcome.epochs_done < 200  # fitted after epoch 1
    assert lrs[-1] == pytest.approx(6e-6, rel=1e-6)  # the cosine's end (the recipe's min_lr), reached
    assert sum(seconds) <= 18 and 2 <= outcome.epochs_done < 40

    # resuming it with another preset, another lr or changed data is refused, naming what differs (exit 2)
    argv = ["train", "--data", str(data), "--preset", settings.preset, "--recipe", "benchmark", "--lr", "2e-3"]
    argv += ["--epochs", "40", "--batch-size", "2", "--warmup-iters", "0", "--workers", "1", "--cutmix", "0"]
    argv += ["--run-name", "budget", "--storage", settings.storage, "--output", settings.output]
    argv += ["--tracking-uri", settings.tracking_uri, "--loader-workers", "0", "--quiet"]

    def refusal(changed: list[str]) -> str:
        capsys.readouterr()
        assert main(changed) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert (
            line.startswith("h2crop train: error: run budget in ") and "was started with other settings or data" in line
        )
        return line

    assert 'settings.preset: "tiny_crops_S2_H_P_jun" then, "tiny_crops_S2_H_jun" now' in refusal(
        [a if a != settings.preset else "tiny_crops_S2_H_jun" for a in argv]
    )
    assert "settings.lr: 0.002 then, 0.001 now" in refusal([a if a != "2e-3" else "1e-3" for a in argv])
    last = sorted((data / "h5_data").glob("*.h5"))[-1]
    with h5py.File(last, "r+") as sample:  # the same size, other content
        key = next(k for k in sample if "label" in k.lower())
        sample[key][0, 0, 0] = (int(sample[key][0, 0, 0]) + 1) % 2
    assert "data.fingerprint: " in refusal(argv)


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
    from pipelines.cli.main import main

    root = Path(shutil.copytree(train_data, tmp_path / "data"))
    (root / "norm_stats.json").unlink()
    index = DatasetIndex(root)
    bad = index.split_paths("train")[1]
    good = bad.read_bytes()
    bad.write_bytes(good[:5000])  # truncated: found while computing the statistics, in a process pool
    command = [
        "train",
        "--data",
        str(root),
        "--preset",
        "tiny_crops_S2_H_P_jun",
        "--epochs",
        "1",
        "--workers",
        "2",
        "--batch-size",
        "2",
        "--storage",
        str(tmp_path / "storage"),
        "--output",
        str(tmp_path / "out"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'ml.db'}",
        "--max-failures",
        "0",
        "--recipe",
        "benchmark",  # an epoch is one pass over the 10 training tiles (the small recipe's would be 130 draws)
        "--quiet",
    ]
    assert main(command + ["--run-name", "pool"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"h2crop train: error: {bad}") and "truncated or corrupt" in err and "Traceback" not in err

    bad.write_bytes(good)
    val = index.split_paths("val")[0]
    val.write_bytes(val.read_bytes()[:5000])  # found by a DataLoader worker inside a Ray Train worker
    command[command.index("--workers") + 1] = "1"  # one Train worker (its DataLoader workers find the file)
    assert main(command + ["--run-name", "worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"h2crop train: error: {val}") and "Traceback" not in err
