import json

import numpy as np
import torch

from h2crop_core.checkpoint import save_checkpoint
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import infer_spec
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import get_preset
from h2crop_core.taxonomy import Taxonomy
from pipelines.cli.main import main


def _checkpoint(root, path, **overrides):
    taxonomy = Taxonomy.from_csv(root / "cascade_labels.csv")
    spec = infer_spec(DatasetIndex(root).all_paths()[0])
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=taxonomy.num_classes, **overrides)
    torch.manual_seed(0)
    model = DualStreamModel(config)
    return save_checkpoint(path, model, config, taxonomy, NormStats.from_json(root / "norm_stats.json"), spec=spec)


def test_evaluate_with_argmax_and_consistent_decoding(train_data, tmp_path, capsys):
    checkpoint = _checkpoint(train_data, tmp_path / "m.ckpt")
    for decode in ("argmax", "consistent"):
        out = tmp_path / decode
        code = main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(train_data),
                "--split",
                "test",
                "--output",
                str(out),
                "--decode",
                decode,
                "--quiet",
                "--loader-workers",
                "0",
            ]
        )
        assert code == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["settings"]["decode"] == decode and metrics["n_samples"] == len(
            DatasetIndex(train_data).split_names("test")
        )
        assert set(metrics["levels"]) == {"level1", "level2", "level3", "level4"}
        assert 0 <= metrics["settings"]["argmax_invalid_path_fraction"] <= 1
        assert metrics["settings"]["input_contract"]["s2_bands"][:2] == ["B2", "B3"]  # the checkpoint's contract
        if decode == "consistent":
            assert metrics["consistency"] == 1.0  # the four levels always agree
        else:
            assert metrics["consistency"] == 1 - metrics["settings"]["argmax_invalid_path_fraction"]
        assert (out / "confusion_level1.png").is_file()
    assert "hierarchy" in capsys.readouterr().out


def test_evaluate_a_single_level_model_and_bf16(train_data, tmp_path, capsys):
    checkpoint = _checkpoint(train_data, tmp_path / "l3.ckpt", levels=(3,))
    out = tmp_path / "l3"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(train_data),
                "--output",
                str(out),
                "--precision",
                "bf16",
                "--quiet",
                "--loader-workers",
                "0",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["levels"]) == ["level3"] and np.isnan(metrics["consistency"] or np.nan)
    assert (out / "per_class_level3.csv").is_file() and not (out / "per_class_level1.csv").exists()
    # consistent decoding needs the four levels: a clear error
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(train_data),
                "--output",
                str(out),
                "--decode",
                "consistent",
                "--quiet",
            ]
        )
        == 2
    )
    assert "four-level model" in capsys.readouterr().err
