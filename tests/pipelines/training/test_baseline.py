"""``h2crop baseline`` end to end: its metrics are the scorer's on its own predictions, and it is an MLflow run."""

import json

import h5py
import pytest

from h2crop_core.data.index import DatasetIndex
from pipelines.cli.main import main


@pytest.fixture(scope="module")
def baseline_run(synth_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("baseline")
    uri = f"sqlite:///{work / 'mlruns.db'}"
    args = [
        "baseline",
        "--data",
        str(synth_root),
        "--output",
        str(work / "out"),
        "--model",
        "rf",
        "--max-pixels",
        "2000",
        "--window",
        "jun",
        "--tracking-uri",
        uri,
        "--run-name",
        "rf-test",
        "--quiet",
    ]
    assert main(args) == 0
    return work, uri


def _without_settings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "settings"}


def test_metrics_equal_score_on_the_saved_predictions(baseline_run, synth_root, capsys):
    work, _ = baseline_run
    out = work / "out"
    names = DatasetIndex(synth_root).split_names("test")
    assert sorted(p.stem for p in (out / "predictions").glob("*.npy")) == sorted(names)
    assert (
        main(
            [
                "score",
                "--data",
                str(synth_root),
                "--predictions",
                str(out / "predictions"),
                "--output",
                str(work / "rescored"),
                "--quiet",
            ]
        )
        == 0
    )
    ours, rescored = (json.loads((folder / "metrics.json").read_text()) for folder in (out, work / "rescored"))
    assert _without_settings(ours) == _without_settings(rescored)
    assert ours["split"] == "test" and ours["settings"]["baseline"] == "rf" and ours["settings"]["train_pixels"] <= 2000
    assert ours["settings"]["predicted_pixels"] == "scored"  # the default: only the labelled pixels classified
    assert ours["levels"]["level1"]["oa"] > 0.5  # it learned something
    val = json.loads((out / "val" / "metrics.json").read_text())
    assert val["split"] == "val" and val["n_samples"] == len(DatasetIndex(synth_root).split_names("val"))
    summary = json.loads((out / "baseline.json").read_text())
    assert summary["train_pixels"] <= 2000 < summary["train_labelled_pixels"] and summary["features"] == 60 + 218


def test_baseline_is_an_mlflow_run_that_runs_compare_lists(baseline_run, capsys):
    from mlflow.tracking import MlflowClient

    from pipelines.runs.compare import load_runs

    work, uri = baseline_run
    rows = load_runs(uri, "h2crop")
    (row,) = [r for r in rows if r.name == "rf-test"]
    assert row.kind == "baseline" and row.status == "FINISHED" and row.epochs == 1
    val = json.loads((work / "out" / "val" / "metrics.json").read_text())
    assert row.values["val_mf1"] == pytest.approx(val["mean"]["mf1"])
    test = json.loads((work / "out" / "metrics.json").read_text())
    metrics = MlflowClient(uri).get_run(row.run_id).data.metrics
    assert metrics["test_level4_oa"] == pytest.approx(test["levels"]["level4"]["oa"])
    assert row.params["settings.model"] == "rf" and row.params["settings.max_pixels"] == "2000"
    assert main(["runs", "--quiet", "compare", "--tracking-uri", uri]) == 0
    assert "rf-test" in capsys.readouterr().out


def test_help_shows_the_predict_setting_with_its_choices_and_default(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["baseline", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert exited.value.code == 0
    assert "--predict {scored,all}" in text and "(default: scored)" in text and "full prediction maps" in text


def test_bad_model_and_unlabelled_train_split_are_one_line_errors(writable_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["baseline", "--data", str(writable_root), "--output", str(tmp_path / "x"), "--model", "knn"])
    assert exited.value.code == 2 and "--model" in capsys.readouterr().err
    for path in DatasetIndex(writable_root).split_paths("train"):
        with h5py.File(path, "r+") as handle:
            key = "label" if "label" in handle else "Label"
            handle[key][...] = 255
    code = main(
        [
            "baseline",
            "--data",
            str(writable_root),
            "--output",
            str(tmp_path / "y"),
            "--quiet",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "train.txt" in err and "no labelled pixel" in err
