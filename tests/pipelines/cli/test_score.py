import json

import h5py
import numpy as np
from PIL import Image

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import read_sample
from h2crop_core.taxonomy import Taxonomy
from pipelines.cli.main import main


def _labels(root, split="test"):
    return {p.stem: read_sample(p, modalities=["label"])["label"] for p in DatasetIndex(root).split_paths(split)}


def _values(tree, key):
    """Every value under ``key`` anywhere in a nested metrics dict (per-class rows excluded)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and not isinstance(v, (dict, list)):
                yield v
            elif k != "per_class":
                yield from _values(v, key)


def test_perfect_predictions_score_one_everywhere(synth_root, tmp_path, capsys):
    folder = tmp_path / "pred"
    folder.mkdir()
    for i, (name, label) in enumerate(_labels(synth_root).items()):
        prediction = np.where(label == 255, 0, label).astype(np.uint8)
        if i % 2:  # both accepted formats
            with h5py.File(folder / f"{name}.h5", "w") as handle:
                handle["pred"] = prediction
        else:
            np.save(folder / f"{name}.npy", prediction)
    out = tmp_path / "out"
    assert (
        main(
            [
                "score",
                "--data",
                str(synth_root),
                "--split",
                "test",
                "--predictions",
                str(folder),
                "--output",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"split", "n_samples", "n_pixels", "levels", "mean", "changed", "unchanged", "consistency"}
    assert metrics["split"] == "test" and metrics["n_samples"] == len(_labels(synth_root))
    for key in ("oa", "miou", "mf1"):
        values = [v for v in _values(metrics, key) if v is not None]
        assert values and all(v == 1.0 for v in values), key
    assert metrics["consistency"] == 1.0
    assert set(metrics["levels"]["level3"]["per_class"][0]) == {
        "id",
        "name",
        "iou",
        "precision",
        "recall",
        "f1",
        "support",
    }
    assert metrics["levels"]["level1"]["per_class"][0]["name"] == "background"
    assert "level4" in capsys.readouterr().out


def test_correct_only_at_level1(synth_root, tmp_path):
    taxonomy = Taxonomy.from_csv(synth_root / "cascade_labels.csv")
    folder = tmp_path / "pred"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, label in _labels(synth_root).items():
        prediction = np.where(label == 255, 0, label).astype(np.uint8)
        for k in (1, 2, 3):
            prediction[k] = rng.integers(0, taxonomy.num_classes[k], size=prediction[k].shape)
        np.save(folder / f"{name}.npy", prediction)
    out = tmp_path / "out"
    assert (
        main(["score", "--data", str(synth_root), "--predictions", str(folder), "--output", str(out), "--quiet"]) == 0
    )
    levels = json.loads((out / "metrics.json").read_text())["levels"]
    assert levels["level1"]["mf1"] == 1.0 and levels["level1"]["oa"] == 1.0
    for k in (2, 3, 4):
        assert levels[f"level{k}"]["mf1"] < 0.5 and levels[f"level{k}"]["oa"] < 0.5
    # CSVs with class names, and plots that open as images
    header = (out / "per_class_level2.csv").read_text().splitlines()[0]
    assert header == "id,name,iou,precision,recall,f1,support"
    plots = sorted(out.glob("*.png"))
    assert {p.name for p in plots} >= {"confusion_level1.png", "f1_level4.png", "changed_vs_unchanged.png"}
    for plot in plots:
        with Image.open(plot) as image:
            image.verify()
            assert image.size[0] >= 300


def test_missing_and_misshaped_predictions_are_named_in_one_error(synth_root, tmp_path, capsys):
    folder = tmp_path / "pred"
    folder.mkdir()
    names = list(_labels(synth_root, "train"))
    np.save(folder / f"{names[0]}.npy", np.zeros((4, 192, 191), np.uint8))
    with h5py.File(folder / f"{names[1]}.h5", "w") as handle:
        handle["prediction"] = np.zeros((4, 192, 192), np.uint8)
    for name in names[2:-1]:
        np.save(folder / f"{name}.npy", np.zeros((4, 192, 192), np.uint8))
    code = main(
        [
            "score",
            "--data",
            str(synth_root),
            "--split",
            "train",
            "--predictions",
            str(folder),
            "--output",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "3 of" in err
    assert f"{names[0]}.npy: expected shape (4, 192, 192); found (4, 192, 191)" in err
    assert f"{names[1]}.h5: expected a dataset 'pred'" in err
    assert f"{names[-1]}.npy (or .h5): missing" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_predictions_beyond_the_taxonomy_name_the_file(synth_root, tmp_path, capsys):
    folder = tmp_path / "pred"
    folder.mkdir()
    for name, label in _labels(synth_root).items():
        prediction = np.where(label == 255, 0, label).astype(np.uint8)
        prediction[0, 0, 0] = 42
        np.save(folder / f"{name}.npy", prediction)
    assert (
        main(
            [
                "score",
                "--data",
                str(synth_root),
                "--predictions",
                str(folder),
                "--output",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "level1 predictions must be ids 0..6; found [42]" in capsys.readouterr().err
