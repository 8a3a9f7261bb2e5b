"""Fine-tuning a run: --init / --pretrained-s2 checked on the driver and applied on the workers (never over a
restored run), the run record, `tune`, and one `h2crop train` end to end (from AgriFM weights, the S2 stream
frozen for its first epoch under DDP). Freezing in the steps under DDP: test_steps.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.errors import SettingError
from h2crop_core.models import DualStreamModel, get_preset
from h2crop_core.models.pretrained import load_agrifm
from h2crop_core.products.contract import InputContract
from pipelines.settings import TrainSettings
from pipelines.training.context import model_config_for, prepare_dataset
from pipelines.training.finetune import INIT_REPORT
from tests.core.models.test_pretrained import agrifm_state

PRESET = "tiny_crops_S2_H_P_jun"


def _settings(data: Path, tmp_path: Path, **changes) -> TrainSettings:
    values = dict(
        data=str(data),
        preset=PRESET,
        epochs=2,
        batch_size=2,
        lr=2e-3,
        warmup_iters=0,
        workers=1,
        loader_workers=0,
        run_name="ft",
        storage=str(tmp_path / "storage"),
        output=str(tmp_path / "out"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
    )
    return TrainSettings(**{**values, **changes})


def _checkpoint(path: Path, data: Path, counts=(3, 5, 8, 10), seed=1, contract: InputContract | None = None) -> Path:
    """An h2crop checkpoint of PRESET for another taxonomy than the data's (seed ``seed``)."""
    context = prepare_dataset(data, progress=False)
    taxonomy = generate_taxonomy(counts, seed=1)
    config = get_preset(PRESET, num_classes=taxonomy.num_classes)
    torch.manual_seed(seed)
    model = DualStreamModel(config)
    return save_checkpoint(path, model, config, taxonomy, context.stats, spec=context.spec, contract=contract)


# ------------------------------------------------------------------------ the driver's check, the record
def test_a_checkpoint_starts_a_run_for_another_taxonomy_but_never_a_restored_one(train_data, tmp_path):
    from pipelines.training.train import check_run_record, prepare_run, run_record
    from pipelines.training.worker import MODEL_FILE, STATE_FILE, start_state

    path = _checkpoint(tmp_path / "a.ckpt", train_data)
    run = prepare_run(_settings(train_data, tmp_path, init=str(path), freeze="streams"))
    report = run.start.report
    assert report.summary()["heads"]["reinitialised"] > 0 and "s2" in report.summary()
    assert run.loop.start_params["loaded"] == len(report.loaded)
    assert any(line.startswith("freeze: s2 and enmap (") and "for the whole run" in line for line in run.start.lines)

    state = start_state(run.loop, torch.device("cpu"), 1)  # a worker of a new run: the checkpoint's streams
    theirs = load_checkpoint(path).model.state_dict()
    ours = state.core.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in report.loaded)
    assert not any(p.requires_grad for p in state.core.s2.parameters())  # frozen for the whole run

    folder = tmp_path / "restored"  # the run's own checkpoint (a restart, a resume): its weights win
    with torch.no_grad():
        for parameter in state.core.parameters():
            parameter.add_(1.0)
    save_checkpoint(folder / MODEL_FILE, state.core, run.config, run.loop.data.taxonomy, run.loop.data.stats)
    state.epoch = 1
    torch.save(state.state_dict(), folder / STATE_FILE)
    restored = start_state(run.loop, torch.device("cpu"), 1, folder)
    assert restored.epoch == 1
    for name, tensor in restored.core.state_dict().items():
        assert torch.equal(tensor, state.core.state_dict()[name]), name

    # the run record keeps the start: a resume with another --init (or none) is refused, naming it; a run
    # without one records none (the records of runs started before these settings existed still match)
    assert run_record(run)["settings"]["init"] == str(path)
    assert not {"init", "pretrained_s2", "freeze", "freeze_epochs"} & set(
        run_record(prepare_run(_settings(train_data, tmp_path)))["settings"]
    )
    check_run_record(run)
    other = _checkpoint(tmp_path / "b.ckpt", train_data, seed=2)
    for changes in ({"init": str(other)}, {"init": "", "freeze": "streams"}):
        changed = prepare_run(_settings(train_data, tmp_path, **{"init": str(path), "freeze": "streams", **changes}))
        with pytest.raises(SettingError, match=r"settings\.init: .* then, .* now") as refused:
            check_run_record(changed)
        assert "\n" not in str(refused.value)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pipelines.cli.main import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_start_weights_and_streams_are_refused_in_one_line_before_ray_starts(train_data, tmp_path, capsys):
    import ray

    ray_was_up = ray.is_initialized()  # the session's Ray, when another test started it
    other = InputContract(s2_convention="reflectance")  # trained on 0-1 reflectance: not this data's inputs
    mismatched = _checkpoint(tmp_path / "contract.ckpt", train_data, contract=other)
    argv = ["train", "--data", str(train_data), "--preset", PRESET, "--storage", str(tmp_path / "s"), "--quiet"]
    code, _, err = _cli([*argv, "--init", str(mismatched)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"h2crop train: error: --init {mismatched}: trained on other inputs than {train_data}")
    assert "S2 convention 'reflectance' vs 'l2a-offset-1000'" in err

    for extra, expected in (
        (["--init", str(tmp_path / "absent.ckpt")], f"--init {tmp_path / 'absent.ckpt'}: checkpoint not found"),
        (
            ["--pretrained-s2", str(tmp_path / "absent.pth")],
            f"--pretrained-s2 {tmp_path / 'absent.pth'}: checkpoint not found",
        ),
        (
            ["--preset", "tiny_crops_S2_jun", "--freeze", "enmap"],
            "freeze enmap: tiny_crops_S2_jun has no enmap stream (its streams: s2)",
        ),
        (["--freeze-epochs", "2"], "freeze_epochs 2: give the stream to freeze (--freeze)"),
    ):
        code, _, err = _cli([*argv, *extra], capsys)
        assert code == 2 and err.strip() == f"h2crop train: error: {expected}", err
    agrifm = tmp_path / "agrifm.pth"
    torch.save({"state_dict": {"module.backbone.unrelated.weight": torch.zeros(2)}}, agrifm)
    code, _, err = _cli([*argv, "--init", str(agrifm)], capsys)
    assert code == 2 and "(AgriFM weights go to --pretrained-s2)" in err
    code, _, err = _cli([*argv, "--pretrained-s2", str(agrifm)], capsys)
    assert code == 2 and "none of its tensors fits the S2 encoder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # every refusal came before the run started (its lock, its storage)
    assert ray.is_initialized() == ray_was_up  # and before Ray: none was started for them


def test_tune_passes_the_start_to_every_trial_and_checks_it_for_each_grid_point(train_data, tmp_path):
    from pipelines.cli.main import build_parser
    from pipelines.cli.options import settings_from_args
    from pipelines.sweeps.space import SpaceError, load_space, trial_settings
    from pipelines.sweeps.sweep import check_for_data

    path = _checkpoint(tmp_path / "a.ckpt", train_data)
    args = build_parser().parse_args(
        ["tune", "--data", str(train_data), "--space", "s.yaml", "--init", str(path), "--freeze", "enmap"]
    )
    base = settings_from_args(TrainSettings, args, preset="")
    space_file = tmp_path / "space.yaml"
    space_file.write_text("preset: tiny_crops_S2_H_P_jun\nmodalities: [S2+H+P, S2+P]\nmax_epochs: 1\n")
    space = load_space(space_file)
    trial = trial_settings(base, space.combinations()[0], source=str(space_file))
    assert (trial.init, trial.freeze) == (str(path), "enmap")
    with pytest.raises((SpaceError, ValueError), match="freeze enmap: tiny_crops_S2_P_jun has no enmap stream"):
        check_for_data(space, base, prepare_dataset(train_data, progress=False))


# ------------------------------------------------------------------------------ one `h2crop train`
@pytest.mark.ray
def test_a_prepared_dataset_trains_from_agrifm_weights_with_the_s2_stream_frozen_for_one_epoch(
    ray_local, prepared_data, tmp_path, capsys
):
    context = prepare_dataset(prepared_data, progress=False)  # h2crop prepare's samples, as they come
    config = model_config_for(_settings(prepared_data, tmp_path), context.taxonomy, context.spec)  # as the run's
    torch.manual_seed(0)  # --seed 0: the workers' fresh model
    fresh = DualStreamModel(config)
    weights = agrifm_state(fresh, prefix="module.")
    agrifm = tmp_path / "agrifm.pth"
    torch.save({"state_dict": weights, "meta": {}}, agrifm)
    argv = ["train", "--data", str(prepared_data), "--preset", PRESET, "--epochs", "2", "--batch-size", "1"]
    argv += ["--lr", "2e-3", "--warmup-iters", "0", "--workers", "2", "--loader-workers", "0", "--run-name", "agri"]
    argv += ["--storage", str(tmp_path / "storage"), "--output", str(tmp_path / "out"), "--quiet"]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}", "--cutmix", "0"]
    code, out, err = _cli([*argv, "--pretrained-s2", str(agrifm), "--freeze", "s2", "--freeze-epochs", "1"], capsys)
    assert code == 0, err[-3000:]
    assert f"[h2crop] start weights: {agrifm} into the S2 encoder: {len(weights)} loaded" in out
    assert "[h2crop] freeze: s2 (" in out and "frozen for the first 1 epoch(s), then trained" in out
    written = json.loads((tmp_path / "out" / INIT_REPORT).read_text())
    assert written["kind"] == "agrifm" and written["counts"]["loaded"] == len(weights)

    run_id = load_checkpoint(tmp_path / "out" / "best.ckpt").meta["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    params = client.get_run(run_id).data.params
    assert params["settings.pretrained_s2"] == str(agrifm) and params["settings.freeze"] == "s2"
    assert params["init.kind"] == "agrifm" and params["init.loaded"] == str(len(weights))
    assert "config/init_report.json" in {a.path for a in client.list_artifacts(run_id, "config")}

    load_agrifm(fresh, agrifm)  # what the workers started from: the seeded fresh model + AgriFM's encoder
    start = fresh.s2.state_dict()
    epochs = {}  # Train keeps both epochs' checkpoints (the latest and the best)
    for checkpoint in sorted((tmp_path / "storage" / "agri").glob("checkpoint_*/model.ckpt")):
        loaded = load_checkpoint(checkpoint)
        epochs[loaded.meta["epoch"]] = loaded.model.s2.state_dict()
    assert sorted(epochs) == [1, 2]
    assert all(torch.equal(epochs[1][k], start[k]) for k in start)  # epoch 1: frozen, BatchNorm included
    assert not torch.equal(epochs[2]["encoder.patch_embed.proj.weight"], start["encoder.patch_embed.proj.weight"])
