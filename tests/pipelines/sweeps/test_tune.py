"""Sweeps on the session's local Ray: ASHA's stops reach MLflow, and the quick sweep survives its driver."""

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from h2crop_core.storage import Remote
from pipelines.runtime import tracking

# Only light imports at module level: Tune's trial actors import this module to run _reporting_trial.
pytestmark = pytest.mark.ray

QUICK = Path(__file__).resolve().parents[3] / "tune_spaces" / "quick.yaml"


def _reporting_trial(config: dict) -> None:
    """A trial that reports given values the way a training's rank 0 does: its own MLflow run, then epochs."""
    import mlflow
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    run_id = tracking.open_run(
        config["uri"], "h2crop", f"asha-{trial_id}", {"value": config["value"]}, {tracking.KIND_TAG: "trial"}
    )
    for epoch in (1, 2):
        mlflow.log_metric("val_mf1", config["value"], step=epoch)
        tune.report({"epoch": epoch, "val_mf1": config["value"], "mlflow_run_id": run_id})
    tracking.close_run()


def test_asha_stops_trials_behind_and_their_runs_end_killed(ray_local, tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from ray import tune

    from pipelines.sweeps.console import SweepConsole
    from pipelines.sweeps.space import load_space
    from pipelines.sweeps.sweep import make_scheduler

    uri = tracking.resolve_tracking_uri(str(tmp_path / "mlruns.db"))
    space = load_space(QUICK)
    tuner = tune.Tuner(
        tune.with_resources(_reporting_trial, {"CPU": 0.01}),
        param_space={"uri": uri, "value": tune.grid_search([0.5, 0.6, 0.1, 0.2])},
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode="max",
            scheduler=make_scheduler(space, 2),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="asha",
            storage_path=str(tmp_path / "ray"),
            verbose=0,
            callbacks=[SweepConsole("asha", space.metric, 2, uri, ["value"], {})],
        ),
    )
    results = tuner.fit()
    assert not results.errors
    client = MlflowClient(uri)
    runs = {
        float(r.data.params["value"]): r
        for r in client.search_runs([client.get_experiment_by_name("h2crop").experiment_id])
    }
    # in turn: 0.5 (nothing to compare with), 0.6 (above 0.5) run on; 0.1 and 0.2 fall below the rung's median
    assert {v: r.info.status for v, r in runs.items()} == {
        0.5: "FINISHED",
        0.6: "FINISHED",
        0.1: "KILLED",
        0.2: "KILLED",
    }
    assert [m.step for m in client.get_metric_history(runs[0.1].info.run_id, "val_mf1")] == [1]  # its last metrics kept
    assert {v: r.data.tags.get(tracking.TRIAL_END_TAG) for v, r in runs.items() if v < 0.5} == {
        0.1: "stopped",
        0.2: "stopped",
    }  # done: a resume keeps them
    out = capsys.readouterr().out
    assert out.count("stopped early after epoch 1") == 2 and out.count("finished: best val_mf1") == 2


def test_a_resumed_sweeps_asha_compares_its_trials_with_those_reported_before_the_resume():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from pipelines.sweeps.space import load_space
    from pipelines.sweeps.sweep import make_scheduler

    space = load_space(QUICK)

    def decision(earlier: dict) -> str:
        scheduler = make_scheduler(space, 2, earlier)
        scheduler.set_search_properties(space.metric, "max")
        trial = SimpleNamespace(trial_id="now")
        scheduler.on_trial_add(None, trial)
        return scheduler.on_trial_result(None, trial, {"epoch": 1, space.metric: 0.5})

    assert decision({}) == TrialScheduler.CONTINUE  # alone in its rung: nothing to be behind
    assert (
        decision({"t00": {1: 0.9, 2: 0.95}, "t01": {1: 0.8}}) == TrialScheduler.STOP
    )  # behind both earlier trials at epoch 1
    assert decision({"t00": {1: 0.2}, "t01": {1: 0.3}}) == TrialScheduler.CONTINUE


def test_asha_never_stops_a_trial_at_the_epoch_it_reports_as_its_last():
    """A small-recipe trial (or one with a time budget or early stopping) can end before max_t: stopped at
    that epoch it would lose its outputs for nothing."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from pipelines.sweeps.space import load_space
    from pipelines.sweeps.sweep import make_scheduler

    space = load_space(QUICK)
    scheduler = make_scheduler(space, 8, {"t00": {1: 0.9}, "t01": {1: 0.8}})  # max_t 8: epoch 1 is not it
    scheduler.set_search_properties(space.metric, "max")
    behind, last = SimpleNamespace(trial_id="behind"), SimpleNamespace(trial_id="last")
    for trial in (behind, last):
        scheduler.on_trial_add(None, trial)
    assert (
        scheduler.on_trial_result(None, behind, {"epoch": 1, space.metric: 0.1, "last_epoch": 0}) == TrialScheduler.STOP
    )
    assert (
        scheduler.on_trial_result(None, last, {"epoch": 1, space.metric: 0.1, "last_epoch": 1})
        == TrialScheduler.CONTINUE
    )


def _lines(process: subprocess.Popen) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def _trial_done(uri: str, key: str) -> bool:
    """Whether the sweep's own record (MLflow) already counts trial ``key`` as done."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("h2crop")
    runs = (
        client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tracking.TRIAL_ID_TAG}` = '{key}'")
        if experiment
        else []
    )
    return any(run.data.tags.get(tracking.TRIAL_END_TAG) for run in runs)


def _wait_for_idle_cluster(ray, timeout: float = 60) -> None:
    """The killed driver's trials, Train workers and placement groups are released by Ray."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"] - 1e-6:
            return
        time.sleep(0.5)
    raise AssertionError(f"the killed sweep's resources were not released: {ray.available_resources()}")


def test_quick_sweep_tracks_stops_early_and_resumes_from_its_bucket_after_its_driver_is_killed(
    ray_local, train_data, s3_bucket, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    from pipelines.cli.main import main
    from pipelines.sweeps.space import load_space

    uri = tracking.resolve_tracking_uri(str(tmp_path / "mlruns.db"))
    # the quick space with one fusion: two trials, one at a time (each Train run costs ~25 s of start-up on 2 cores)
    space = tmp_path / "quick.yaml"
    space.write_text(QUICK.read_text().replace("model.fusion: [concat, gated]", "model.fusion: [concat]"))
    assert load_space(space).trial_count() == 2
    argv = [
        "tune",
        "--data",
        str(train_data),
        "--space",
        str(space),
        "--name",
        "quick",
        "--storage",
        f"{s3_bucket}/ray",
        "--tracking-uri",
        uri,
        "--output",
        str(tmp_path / "runs"),
        "--loader-workers",
        "0",
        "--repeat-best",
        "1",
        "--concurrent",
        "1",  # the second trial starts after the first has finished: the driver is killed between them
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines, seen, first = _lines(driver), [], None
    try:
        deadline = time.monotonic() + 240
        while first is None and time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            seen.append(line)
            if "finished: best" in line:
                first = line.split(" trial ")[1].split()[0]
        assert first, "".join(seen)
        while not _trial_done(uri, first) and time.monotonic() < deadline:
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)  # the driver dies mid-sweep: no chance to save or clean up
    finally:
        driver.kill()
        driver.wait(30)
    client = MlflowClient(uri)
    first_run = client.search_runs(
        [client.get_experiment_by_name("h2crop").experiment_id],
        filter_string=f"tags.`{tracking.TRIAL_ID_TAG}` = '{first}'",
    )[0]
    _wait_for_idle_cluster(ray_local)

    assert main(argv) == 0  # the same command resumes the sweep
    out = capsys.readouterr().out
    assert "resuming sweep quick: " in out and f"trial {first} started" not in out
    assert Remote(
        f"{s3_bucket}/ray/quick/attempt-2"
    ).names()  # the resumed trials ran as a new Tune experiment in the bucket
    experiment_id = client.get_experiment_by_name("h2crop").experiment_id
    parent = client.search_runs([experiment_id], filter_string=f"tags.`{tracking.KIND_TAG}` = 'sweep'")
    assert (
        len(parent) == 1
        and parent[0].info.status == "FINISHED"
        and parent[0].data.params["space_digest"] == load_space(space).digest
    )
    everything = client.search_runs(
        [experiment_id], filter_string=f"tags.`{tracking.PARENT_TAG}` = '{parent[0].info.run_id}'"
    )
    children = [c for c in everything if c.data.tags[tracking.KIND_TAG] == "trial"]
    best = parent[0].data.tags["best_trial"]
    assert len(children) == 2 and best in {c.data.tags[tracking.TRIAL_ID_TAG] for c in children}
    # --repeat-best 1: the best configuration once more, with the next seed, tagged with the trial it repeats
    (repeat,) = [c for c in everything if c.data.tags[tracking.KIND_TAG] == "repeat"]
    best_config = json.loads(
        next(c for c in children if c.data.tags[tracking.TRIAL_ID_TAG] == best).data.tags[tracking.CONFIG_TAG]
    )
    assert repeat.data.tags["h2crop.repeat_of"] == best and repeat.info.status == "FINISHED"
    assert (
        json.loads(repeat.data.tags[tracking.CONFIG_TAG]) == {**best_config, "seed": 1}
        and repeat.data.params["settings.seed"] == "1"
    )
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}  # none left RUNNING
    for child in children:
        epochs = len(client.get_metric_history(child.info.run_id, "val_mf1"))
        assert epochs == (2 if child.info.status == "FINISHED" else 1)
        assert all(client.get_metric_history(child.info.run_id, f"val_level{k}_mf1") for k in range(1, 5))
        assert json.loads(child.data.tags[tracking.CONFIG_TAG])["window"] in ("oct", "jun")
    again = client.get_run(first_run.info.run_id)  # the finished trial was not run again
    assert again.info.end_time == first_run.info.end_time and "resumed_from_epoch" not in again.data.metrics
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert all(
        (tmp_path / "runs" / "trials" / c.data.tags[tracking.TRIAL_ID_TAG] / "best.ckpt").is_file() for c in finished
    )
    table = list(csv.DictReader((tmp_path / "runs" / "sweep_summary.csv").read_text().splitlines()))
    grouped = [r for r in table if r.get("n") == "2"]  # the repeat beside the trial it repeats (when that one finished)
    assert len(table) == 2 and len(grouped) == 1 or len(table) == 3 and not grouped
    assert [float(r["val_mf1"]) for r in table] == sorted((float(r["val_mf1"]) for r in table), reverse=True)
    print(out, file=sys.stderr)  # the resumed sweep's console, for the closing note


def test_a_trial_larger_than_the_cluster_is_refused_before_anything_starts(ray_local, train_data, tmp_path, capsys):
    from pipelines.cli.main import main

    argv = [
        "tune",
        "--data",
        str(train_data),
        "--space",
        str(QUICK),
        "--name",
        "big",
        "--workers-per-trial",
        "3",
        "--cpus-per-worker",
        "2",
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlruns.db'}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "trial's worker group needs 6 CPU (the Ray cluster has 4)" in err[0]
        and "--workers-per-trial" in err[0]
    )
    assert not (tmp_path / "ray" / "big").exists()  # no Tune experiment was started


def test_a_sweep_whose_name_is_in_use_is_refused_naming_the_holder(ray_local, train_data, tmp_path, capsys):
    from h2crop_core.runlock import RunLock
    from pipelines.cli.main import main

    argv = [
        "tune",
        "--data",
        str(train_data),
        "--space",
        str(QUICK),
        "--name",
        "taken",
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlruns.db'}",
    ]
    with RunLock(str(tmp_path / "ray"), "taken", "sweep"):  # a live sweep of that name, in this process
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"sweep name 'taken' is in use in {tmp_path / 'ray'}: held by sweep on host" in err[0]
    assert not (tmp_path / "ray" / "taken").exists()  # no Tune experiment was started
