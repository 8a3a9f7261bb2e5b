import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from h2crop_core.data.normalise import NormStats
from pipelines.cli.main import main


def test_synth_then_validate_32_samples_then_break_two(tmp_path, capsys):
    root = tmp_path / "X"
    assert main(["synth", "--out", str(root), "--samples", "32", "--region-size", "0", "--quiet"]) == 0
    assert main(["validate", "--data", str(root), "--quiet", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "32 good, 0 bad of 32 checked" in out
    report = json.loads((root / "validation.json").read_text())
    assert report["ok"] and report["good"] == 32 and report["bad"] == []

    files = sorted((root / "h5_data").glob("*.h5"))
    truncated, misshaped = files[3], files[17]
    truncated.write_bytes(truncated.read_bytes()[:4_000_000])
    with h5py.File(misshaped, "a") as handle:
        del handle["EnMAP_data"]
        handle.create_dataset("EnMAP_data", data=np.zeros((218, 63, 64), np.int16))
    assert main(["validate", "--data", str(root), "--quiet"]) == 2  # the user's data: exit 2, as every bad input
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err.strip().splitlines() == [
        f"h2crop validate: error: {root} has problems (listed above and in {root / 'validation.json'})"
    ]
    assert "30 good, 2 bad of 32 checked" in out
    assert str(truncated) in out and "truncated" in out
    assert f"{misshaped} [EnMAP_data]: expected shape (218, 64, 64); found shape (218, 63, 64)" in out
    report = json.loads((root / "validation.json").read_text())
    assert not report["ok"]
    assert {entry["path"] for entry in report["bad"]} == {str(truncated), str(misshaped)}


def test_validate_a_split_reports_missing_members(writable_root, capsys):
    names = (writable_root / "data_lists" / "val.txt").read_text().split()
    (writable_root / "h5_data" / f"{names[0]}.h5").unlink()
    report_path = writable_root / "custom.json"
    assert (
        main(["validate", "--data", str(writable_root), "--split", "val", "--report", str(report_path), "--quiet"]) == 2
    )
    assert names[0] in capsys.readouterr().out
    assert json.loads(report_path.read_text())["missing"] == [names[0]]


def test_reports_go_into_new_folders(writable_root, tmp_path):
    assert (
        main(["validate", "--data", str(writable_root), "--report", str(tmp_path / "new" / "v.json"), "--quiet"]) == 0
    )
    assert json.loads((tmp_path / "new" / "v.json").read_text())["ok"]


def test_validate_with_a_taxonomy_that_does_not_fit_the_labels(writable_root, tmp_path, capsys):
    from h2crop_core.data.synth import generate_taxonomy

    small = generate_taxonomy((2, 3, 4, 5), seed=0).to_csv(tmp_path / "small.csv")
    assert main(["validate", "--data", str(writable_root), "--taxonomy", str(small), "--quiet"]) == 2
    assert "level1 ids 0..2 or 255" in capsys.readouterr().out


def test_stats_writes_norm_stats_json(writable_root, capsys):
    assert main(["stats", "--data", str(writable_root), "--quiet", "--workers", "1"]) == 0
    stats = NormStats.from_json(writable_root / "norm_stats.json")
    assert len(stats.s2_mean) == 10 and len(stats.enmap_std) == 218
    assert stats.meta["split"] == "train" and stats.meta["n_samples"] >= 1
    assert "norm_stats.json" in capsys.readouterr().out
    from PIL import Image

    with Image.open(writable_root / "norm_stats.png") as image:
        assert image.size[0] > 500 and image.size[1] > 200


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["validate", "--data", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("h2crop validate: error:") and "Traceback" not in err
    (tmp_path / "root" / "h5_data").mkdir(parents=True)
    assert main(["stats", "--data", str(tmp_path / "root"), "--quiet"]) == 2
    assert "data_lists/ or data_list/" in capsys.readouterr().err


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("h2crop")
    if not script.exists():
        script = shutil.which("h2crop")
    assert script, "the h2crop console script is not installed"
    run = subprocess.run(
        [str(script), "synth", "--out", str(tmp_path / "s"), "--samples", "1", "--region-size", "48", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "s" / "region" / "region.json").is_file()
    run = subprocess.run(
        [str(script), "synth", "--out", str(tmp_path / "t"), "--samples", "1", "--region-size", "50"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "multiples of 3" in run.stderr


def test_model_info_is_a_subcommand(capsys):
    assert main(["model-info", "tiny_crops_S2_H_P_jun"]) == 0
    assert "tiny_crops_S2_H_P_jun" in capsys.readouterr().out
    assert main(["model-info", "no_such_preset"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def _subcommand(name: str):
    from pipelines.cli.main import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize(
    "command,cls", [("train", "TrainSettings"), ("evaluate", "EvaluateSettings"), ("map", "MapSettings")]
)
def test_options_are_the_settings_fields_with_their_defaults_help_and_choices(command, cls):
    import dataclasses

    from pipelines import settings as settings_module
    from pipelines.cli.options import cli_fields, option_flags

    settings_cls = getattr(settings_module, cls)
    actions = {a.dest: a for a in _subcommand(command)._actions}
    fields = cli_fields(settings_cls)
    assert len(fields) >= 7
    for item in fields:
        action = actions[item.name]
        assert set(option_flags(item)) <= set(action.option_strings)  # (+ --no-... for switches that default on)
        assert item.metadata["help"] and action.help.startswith(item.metadata["help"]), item.name
        if item.default is not dataclasses.MISSING:
            assert action.default == item.default, item.name
        assert tuple(action.choices or ()) == tuple(item.metadata.get("choices") or ()), item.name
    # an unchanged command line gives exactly the dataclass's defaults
    from pipelines.cli.options import settings_from_args

    required = {
        "train": ["--data", "D", "--preset", "P"],
        "evaluate": ["--checkpoint", "c", "--data", "d", "--output", "o"],
        "map": ["--checkpoint", "c", "--region", "r", "--output", "o"],
    }[command]
    args = _subcommand(command).parse_args(required)
    built = settings_from_args(settings_cls, args, **({"data": "D", "preset": "P"} if command == "train" else {}))
    assert built == settings_cls(**({"data": "D", "preset": "P"} if command == "train" else {}))


def test_evaluate_checkpoint_defaults_are_the_evaluate_settings():
    import inspect

    from h2crop_core.evaluation import evaluate_checkpoint
    from pipelines.settings import EvaluateSettings

    defaults = EvaluateSettings()
    for name, parameter in inspect.signature(evaluate_checkpoint).parameters.items():
        if parameter.default is not inspect.Parameter.empty and hasattr(defaults, name):
            assert parameter.default == getattr(defaults, name), name


def test_bad_settings_are_user_errors_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    assert main(["map", "--checkpoint", "c", "--region", "r", "--output", "o", "--actors", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "h2crop map: error: actors must be at least 1; got 0"
    assert main(["train", "--data", str(tmp_path), "--preset", "p", "--cutmix", "1.5"]) == 2
    assert "cutmix_p is a probability" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr("h2crop_core.data.synth.synthesize_dataset", broken)
    assert main(["synth", "--out", str(tmp_path / "x"), "--samples", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal invariant broke" in err and "a bug in h2crop" in err
