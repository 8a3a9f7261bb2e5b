"""`runs compare | gain | early-season` on an MLflow store holding a small window x modality sweep.

The runs are logged with real MLflow the way a sweep's trials log themselves (params, tags, per-epoch
metrics, the best epoch's per-class report), with metric values chosen so every expected number is known.
"""

import csv
import json
import math

import pytest
from mlflow.tracking import MlflowClient

from h2crop_core.data.schema import WINDOWS
from h2crop_core.errors import SettingError
from h2crop_core.models.presets import get_preset
from pipelines.cli.main import main
from pipelines.runs.compare import compare_records, format_records, load_runs, metric_key
from pipelines.runs.reports import earliest_records, gain_records, gain_summary
from pipelines.runtime import tracking
from pipelines.settings import TrainSettings

SWEEP = "windows"
#: designed per-level mF1: S2 alone, and the gain of the EnMAP stream per window
BASE = {"jun": (0.50, 0.30, 0.20, 0.10), "oct": (0.60, 0.40, 0.30, 0.20)}
GAIN = {"jun": (0.02, 0.04, 0.06, 0.08), "oct": (0.01, 0.02, 0.03, 0.04)}
#: per-class level-4 F1 (class 1 needs the late window, class 2 is early): window -> (class 1, class 2)
CLASS_F1 = {"jun": (0.50, 0.85), "oct": (0.90, 0.90)}


def _levels(window: str, enmap: bool, seed: int) -> list[float]:
    noise = 0.01 if seed else -0.01  # two seeds: mean = the designed value, std = 0.01414
    return [b + (g if enmap else 0.0) + noise for b, g in zip(BASE[window], GAIN[window])]


def _log_trial(
    client, experiment_id, tmp_path, window: str, modalities: str, seed: int, status: str = "FINISHED", epochs: int = 2
) -> str:
    config = {"preset": "tiny_crops_S2_H_jun", "window": window, "modalities": modalities, "seed": seed}
    preset = f"tiny_crops_{modalities.replace('+', '_')}_{window}"
    settings = TrainSettings(data="d", preset=preset, seed=seed, run_name=f"{SWEEP}-{window}-{modalities}-{seed}")
    params = tracking.flatten({"settings": settings.to_dict(), "model": get_preset(preset).to_dict()})
    run = client.create_run(
        experiment_id,
        run_name=settings.run_name,
        tags={
            tracking.KIND_TAG: "trial",
            tracking.SWEEP_TAG: SWEEP,
            tracking.CONFIG_TAG: json.dumps(config),
            tracking.RUN_NAME_TAG: settings.run_name,
        },
    )
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    levels = _levels(window, "+H" in modalities, seed)
    for epoch in range(1, epochs + 1):
        worse = 0.0 if epoch == epochs else 0.05  # the last epoch is the best
        for k, value in enumerate(levels, 1):
            client.log_metric(run_id, f"val_level{k}_mf1", value - worse, step=epoch)
        client.log_metric(run_id, "val_mf1", sum(levels) / 4 - worse, step=epoch)
    report = tmp_path / run_id / "best_report"
    report.mkdir(parents=True)
    for k in range(1, 5):
        f1 = CLASS_F1[window] if k == 4 else (0.5, 0.5)
        rows = [
            ["id", "name", "iou", "precision", "recall", "f1", "support"],
            [0, "background", 0.1, 0.1, 0.1, 0.1, 50],
        ]
        rows += [[c, f"crop {c}", 0.5, 0.5, 0.5, f1[c - 1], 100] for c in (1, 2)]
        (report / f"per_class_level{k}.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
        client.log_artifact(run_id, str(report / f"per_class_level{k}.csv"), artifact_path="best_report")
    client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("runs")
    uri = tracking.resolve_tracking_uri(str(tmp_path / "mlruns.db"))
    client = MlflowClient(uri)
    experiment_id = tracking.ensure_experiment(uri, "h2crop")
    for window in ("oct", "jun"):
        for modalities in ("S2", "S2+H"):
            for seed in (0, 1):
                _log_trial(client, experiment_id, tmp_path, window, modalities, seed)
    # a trial stopped early: compared, never paired
    _log_trial(client, experiment_id, tmp_path, "jun", "S2+H", 7, status="KILLED", epochs=1)
    return uri


def test_gain_pairs_by_setting_and_seed(store, tmp_path, capsys):
    rows = load_runs(store, "h2crop", SWEEP)
    records = gain_records(rows)
    assert [(r["window"], r["months"], r["pairs"]) for r in records] == [("jun", 6, 2), ("oct", 10, 2)]
    for record in records:
        for k, level in enumerate(("level1", "level2", "level3", "level4")):
            assert record[f"{level}_gain"] == pytest.approx(GAIN[record["window"]][k])
            assert record[f"{level}_without"] == pytest.approx(BASE[record["window"]][k])
    summary = gain_summary(records)
    assert summary["mean_gain_points"] == pytest.approx(100 * sum(map(sum, GAIN.values())) / 8)
    assert summary["best_gain_points"] == pytest.approx(8.0) and summary["best_at"] == "level4, window jun"

    assert main(["runs", "gain", "--sweep", SWEEP, "--tracking-uri", store, "--output", str(tmp_path / "gain")]) == 0
    printed = capsys.readouterr().out
    assert "mean gain +3.8 F1 points, best +8.0 (level4, window jun)" in printed
    with open(tmp_path / "gain" / "gain.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["window"] for r in table] == ["jun", "oct"] and float(table[0]["level4_gain"]) == pytest.approx(0.08)
    assert (tmp_path / "gain" / "gain.png").stat().st_size > 10_000


def test_early_season_levels_classes_and_earliest_window(store, tmp_path, capsys):
    out = tmp_path / "early"
    assert main(["runs", "early-season", "--sweep", SWEEP, "--tracking-uri", store, "--output", str(out)]) == 0
    with open(out / "early_season_levels.csv", newline="") as handle:
        levels = list(csv.DictReader(handle))
    assert len(levels) == 2 * 2 * 4  # series (S2, S2+H) x windows x levels; the stopped trial left out
    s2_h_jun_4 = next(r for r in levels if r["series"] == "S2+H" and r["window"] == "jun" and r["level"] == "level4")
    assert float(s2_h_jun_4["mf1"]) == pytest.approx(BASE["jun"][3] + GAIN["jun"][3]) and s2_h_jun_4["n"] == "2"
    assert float(s2_h_jun_4["std"]) == pytest.approx(math.sqrt(2) * 0.01)
    with open(out / "earliest_window.csv", newline="") as handle:
        earliest = {(r["series"], r["level"], r["class_id"]): r for r in csv.DictReader(handle)}
    assert earliest[("S2", "level4", "1")]["earliest_window"] == "oct"  # 0.50 < 0.8 x 0.90
    assert earliest[("S2", "level4", "2")]["earliest_window"] == "jun"  # 0.85 >= 0.72
    assert float(earliest[("S2", "level4", "1")]["target_f1"]) == pytest.approx(0.72)
    with open(out / "early_season_classes.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 4 * 2 * 2  # series x levels x classes x windows
    for png in ("early_season.png", "early_season_classes.png"):
        assert (out / png).stat().st_size > 5_000
    assert "level-4 classes reaching their target first at: jun 2, oct 2" in capsys.readouterr().out


def test_earliest_with_an_absolute_target():
    classes = [
        {
            "series": "S2",
            "level": "level4",
            "class_id": 1,
            "class_name": "a",
            "window": w,
            "months": WINDOWS[w],
            "f1": f,
        }
        for w, f in (("jun", 0.6), ("aug", 0.7), ("oct", 0.75))
    ]
    assert earliest_records(classes, target=0.7)[0]["earliest_window"] == "aug"
    assert earliest_records(classes, target=0.9)[0]["earliest_window"] == ""


def test_compare_groups_seeds_best_first_in_every_format(store, capsys):
    rows = load_runs(store, "h2crop", SWEEP)
    columns, records = compare_records(rows, "val_mf1")
    assert columns[:5] == ["name", "status", "window", "modalities", "n"]
    finished = [(r["window"], r["modalities"], r["n"]) for r in records if r["status"] == "FINISHED"]
    assert finished == [("oct", "S2+H", 2), ("oct", "S2", 2), ("jun", "S2+H", 2), ("jun", "S2", 2)]
    assert records[0]["level4"] == pytest.approx(0.24) and records[0]["level4_std"] == pytest.approx(
        math.sqrt(2) * 0.01
    )
    killed = [r for r in records if r["status"] == "KILLED"]  # not averaged with the finished seeds
    assert len(killed) == 1 and killed[0]["n"] == 1 and killed[0]["epochs"] == 1
    values = [r["val_mf1"] for r in records]
    assert values == sorted(values, reverse=True)
    assert "0.2400 ± 0.0141" in format_records(columns, records)
    assert (
        main(
            ["runs", "compare", "--sweep", SWEEP, "--tracking-uri", store, "--format", "json", "--metric", "level4.mf1"]
        )
        == 0
    )
    parsed = json.loads(capsys.readouterr().out)
    assert parsed[0]["val_level4_mf1"] == pytest.approx(0.24) and parsed[0]["epochs"] == 2
    assert main(["runs", "compare", "--sweep", SWEEP, "--tracking-uri", store, "--format", "csv"]) == 0
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {"level1", "level1_std", "val_mf1", "minutes"} <= set(table[0]) and len(table) == 5
    assert main(["runs", "compare", "--sweep", SWEEP, "--tracking-uri", store, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| name | status | window")


def test_compare_plot_and_refusals(store, tmp_path, capsys):
    plot = tmp_path / "by_window.png"
    assert (
        main(["runs", "compare", "--sweep", SWEEP, "--tracking-uri", store, "--by", "window", "--plot", str(plot)]) == 0
    )
    assert plot.stat().st_size > 10_000
    assert main(["runs", "compare", "--sweep", SWEEP, "--tracking-uri", store, "--by", "lr", "--plot", str(plot)]) == 2
    assert (
        "--by lr: not a setting that varies between these runs; use one of window, modalities"
        in capsys.readouterr().err
    )
    assert main(["runs", "compare", "--sweep", "nope", "--tracking-uri", store]) == 2
    assert "--sweep nope: no runs" in capsys.readouterr().err
    assert main(["runs", "compare", "--tracking-uri", str(tmp_path / "missing.db")]) == 2
    assert "no MLflow store there" in capsys.readouterr().err
    with pytest.raises(SettingError, match="use one of mean.mf1"):
        metric_key("f1")


def test_gain_needs_pairs(store):
    rows = [r for r in load_runs(store, "h2crop", SWEEP) if r.config["modalities"] == "S2+H"]
    with pytest.raises(SettingError, match="no pair of finished runs with and without EnMAP"):
        gain_records(rows)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _http(url: str, body: dict | None = None, timeout: float = 5) -> str:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def test_runs_ui_serves_its_page_and_lists_the_runs_over_http(store):
    """`h2crop runs ui` from the install `make install` gives: the page is served on loopback, and its REST
    API lists the store's runs (an MLflow older than the store refuses it; a missing UI never serves)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    command = [sys.executable, "-m", "pipelines.cli", "runs", "ui", "--tracking-uri", store, "--port", str(port)]
    ui = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and ui.poll() is None:
            try:
                page = _http(base + "/")
            except OSError:
                time.sleep(0.5)
        assert page is not None, f"the UI never answered: {ui.poll()=}"
        assert "<html" in page.lower() and "mlflow" in page.lower()
        experiments = json.loads(_http(base + "/api/2.0/mlflow/experiments/search", {"max_results": 10}))
        (experiment,) = [e for e in experiments["experiments"] if e["name"] == "h2crop"]
        found = json.loads(
            _http(
                base + "/api/2.0/mlflow/runs/search",
                {"experiment_ids": [experiment["experiment_id"]], "max_results": 100},
            )
        )
        names = sorted(run["info"]["run_name"] for run in found["runs"])
        client = MlflowClient(store)
        expected = sorted(r.info.run_name for r in client.search_runs([experiment["experiment_id"]], max_results=100))
        assert names == expected and len(names) == 9  # 2 windows x 2 modalities x 2 seeds, and the stopped one
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI and the server processes it started (its own session)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(timeout=30)
        if ui.stdout:
            ui.stdout.close()
