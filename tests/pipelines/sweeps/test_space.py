"""Search-space files: the shipped ones load; a malformed one is refused naming its file and key."""

from pathlib import Path

import pytest

from pipelines.settings import TrainSettings
from pipelines.sweeps.space import Choice, Fixed, Range, SpaceError, compose_preset, load_space, trial_settings

SPACES = Path(__file__).resolve().parents[3] / "tune_spaces"


def test_shipped_spaces_load_with_their_trial_counts():
    quick = load_space(SPACES / "quick.yaml")
    assert quick.trial_count() == 4 and quick.scheduler == "asha" and quick.max_epochs == 2
    assert isinstance(quick.params["model.fusion"], Choice) and isinstance(quick.params["lr"], Fixed)
    grid = load_space(SPACES / "temporal_window.yaml")
    assert grid.trial_count() == 16 and grid.scheduler == "fifo"
    presets = {trial_settings(TrainSettings(data="", preset=""), combo).preset for combo in grid.combinations()}
    assert len(presets) == 16 and "crops_S2_H_P_dec" in presets and "crops_S2_jun" in presets
    assert load_space(SPACES / "quick_grid.yaml").trial_count() == 4
    fusion = load_space(SPACES / "fusion.yaml")
    assert fusion.search == "random" and fusion.trial_count() == 24 and fusion.trial_count(5) == 5
    assert fusion.params["lr"] == Range(2e-5, 3e-4, log=True)


def test_trial_configs_list_every_grid_point_and_repeat_seed_under_stable_keys():
    quick = load_space(SPACES / "quick.yaml")
    configs = quick.trial_configs(trials=8, base_seed=3)
    assert list(configs) == [f"t0{i}" for i in range(8)]
    points = {(c["window"], c["model.fusion"], c["seed"]) for c in configs.values()}
    assert points == {(w, f, s) for w in ("oct", "jun") for f in ("concat", "gated") for s in (3, 4)}
    assert all(c["lr"] == 2e-3 and c["preset"] == "tiny_crops_S2_H_jun" for c in configs.values())
    assert "seed" not in quick.trial_configs()["t00"]  # no repeats: the run's own seed
    with pytest.raises(SpaceError, match="multiple of it"):
        quick.trial_count(6)


def test_random_trial_configs_are_the_same_for_the_same_seed_and_stay_in_their_ranges():
    fusion = load_space(SPACES / "fusion.yaml")
    first, again, other = (
        fusion.trial_configs(5, base_seed=0),
        fusion.trial_configs(5, base_seed=0),
        fusion.trial_configs(5, base_seed=1),
    )
    assert first == again and first != other and list(first) == ["t00", "t01", "t02", "t03", "t04"]
    assert all(
        2e-5 <= c["lr"] <= 3e-4 and c["model.fusion"] in ("concat", "gated", "cross_attention") for c in first.values()
    )
    ints = Range(1, 3, integer=True)
    import numpy as np

    from pipelines.sweeps.space import _draw_range

    rng = np.random.default_rng(0)
    assert {_draw_range(ints, rng) for _ in range(200)} == {1, 2, 3}  # both ends of an integer range


def test_trial_settings_compose_the_benchmark_grid():
    base = TrainSettings(data="d", preset="", lr=1e-3)
    settings = trial_settings(
        base,
        {"preset": "tiny_crops_S2_H_jun", "window": "dec", "modalities": "S2+P", "model.fusion": "gated", "lr": 5e-4},
        run_name="r",
    )
    assert (
        settings.preset == "tiny_crops_S2_P_dec"
        and settings.overrides == {"fusion": "gated"}
        and settings.lr == 5e-4
        and settings.run_name == "r"
    )
    assert compose_preset("crops_S2_H_P_jun", window="aug") == "crops_S2_H_P_aug"
    with pytest.raises(SpaceError, match="level1_crops_S2_H_P_jun"):
        compose_preset("level1_crops_S2_H_P_jun", window="aug")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("preset: tiny_crops_S2_H_jun\nfusion: [concat]\n", r"unknown key 'fusion' \(did you mean model.fusion\?\)"),
        ("preset: tiny_crops_S2_H_jun\nmodel.fusion: [concat, sum]\n", r"model.fusion: .*'sum'"),
        ("preset: tiny_crops_S2_H_jun\nmodel.widths: [1]\n", r"model.widths: the model has no such setting"),
        ("preset: tiny_crops_S2_H_jun\nlr: {min: 0.01, max: 0.001}\n", r"lr: min must be below max"),
        ("preset: tiny_crops_S2_H_jun\nlr: {min: 0, max: 0.1, log: true}\n", r"lr: a log range needs min above 0"),
        ("preset: tiny_crops_S2_H_jun\nlr: {low: 0.1, max: 1}\n", r"lr: a range is \{min"),
        ("preset: tiny_crops_S2_H_jun\nbatch_size: [2, two]\n", r"batch_size: expected int values, got 'two'"),
        ("preset: tiny_crops_S2_H_jun\ncutmix_p: [0.5, 2]\n", r"cutmix_p: .*probability"),
        (
            "preset: tiny_crops_S2_H_jun\nworkers: [1, 2]\n",
            r"workers: not a per-trial setting; set it with --workers-per-trial",
        ),
        ("preset: [tiny_crops_S2_H_jun, nope]\n", r"preset: unknown preset 'nope'"),
        ("preset: tiny_crops_S2_H_jun\nwindow: [may]\n", r"window: 'may' is not a benchmark window"),
        ("preset: tiny_crops_S2_H_jun\nmodalities: [S2+X]\n", r"modalities: 'S2\+X' is not allowed"),
        ("preset: level2_crops_S2_H_P_jun\nwindow: [aug]\n", r"window and modalities rewrite"),
        (
            "preset: tiny_crops_S2_H_jun\nscheduler: hyperband\n",
            r"scheduler: 'hyperband' is not allowed; use one of asha, fifo",
        ),
        ("preset: tiny_crops_S2_H_jun\nmetric: val_loss\n", r"metric: 'val_loss' is not allowed"),
        ("preset: tiny_crops_S2_H_jun\nmodel.s2_depths: [2, 2]\n", r"model.s2_depths: expected a list per value"),
        ("preset: tiny_crops_S2_H_jun\nsamples: 2\nseed: [0, 1]\n", r"seed: a grid with samples: 2 repeats each point"),
        (
            "preset: tiny_crops_S2_H_jun\nmax_epochs: 3\ngrace_period: 5\n",
            r"grace_period: 5 epochs before ASHA's first decision, but trials run 3",
        ),
        (
            "preset: tiny_crops_S2_H_jun\nbatch_size: {min: 1.5, max: 4}\n",
            r"batch_size: an integer setting's range needs whole-number bounds",
        ),
        ("preset: tiny_crops_S2_H_jun\nmodel.window: [13]\n", r"model.window: .*1-12"),
        ("model.fusion: [concat]\n", r"no preset key"),
        ("preset: [tiny_crops_S2_H_jun\n", r"not valid YAML"),
        ("- a\n- b\n", r"expected a mapping"),
    ],
)
def test_malformed_space_names_file_and_key(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=named) as raised:
        load_space(path)
    assert str(raised.value).startswith(str(path))


def test_malformed_space_is_one_line_exit_2_from_the_cli(tmp_path, capsys):
    from pipelines.cli.main import main

    path = tmp_path / "bad.yaml"
    path.write_text("preset: tiny_crops_S2_H_jun\nmodel.fuson: [concat]\n")
    assert main(["tune", "--data", str(tmp_path), "--space", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "bad.yaml: model.fuson: the model has no such setting (did you mean model.fusion?)" in err[0]
    )


def test_yaml_exponents_and_month_windows_are_read_as_meant(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "preset: tiny_crops_S2_H_jun\nlr: [1e-3, 3e-4]\nweight_decay: {min: 1e-5, max: 1e-3, log: true}\nmodel.window: [3, jun]\n"
    )
    space = load_space(path)  # PyYAML reads 1e-3 as a string; the space reads it as the number it is
    assert space.params["lr"] == Choice((1e-3, 3e-4)) and space.params["weight_decay"] == Range(1e-5, 1e-3, log=True)
    assert trial_settings(
        TrainSettings(data="", preset=""), {"preset": "tiny_crops_S2_H_jun", "model.window": 3}
    ).overrides == {"window": 3}
