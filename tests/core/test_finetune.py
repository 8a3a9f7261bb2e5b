"""Fine-tuning in the library: start weights by name and shape across taxonomies, the report, the streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from h2crop_core.checkpoint import save_checkpoint
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.errors import SettingError
from h2crop_core.finetune import InitError, InitReport, init_from_checkpoint, stream_modules
from h2crop_core.models import DualStreamModel, get_preset
from h2crop_core.models.pretrained import LoadReport
from h2crop_core.models.summary import build_meta

PRESET = "tiny_crops_S2_H_P_jun"


def _model(counts: tuple[int, ...], seed: int, preset: str = PRESET) -> DualStreamModel:
    config = get_preset(preset, num_classes=generate_taxonomy(counts, seed=1).num_classes)
    torch.manual_seed(seed)
    return DualStreamModel(config)


def _checkpoint(tmp_path, model: DualStreamModel, counts: tuple[int, ...]):
    stats = NormStats(np.zeros(10), np.ones(10), np.zeros(218), np.ones(218))
    taxonomy = generate_taxonomy(counts, seed=1)
    return save_checkpoint(tmp_path / "a.ckpt", model, model.config, taxonomy, stats)


def test_a_checkpoint_of_another_taxonomy_gives_its_streams_and_the_heads_start_fresh(tmp_path):
    old = _model((3, 5, 8, 10), seed=1)  # taxonomy A
    path = _checkpoint(tmp_path, old, (3, 5, 8, 10))
    model = _model((4, 6, 9, 12), seed=0)  # taxonomy B: other class counts at every level
    report = init_from_checkpoint(model, path)

    theirs, ours, fresh = old.state_dict(), model.state_dict(), _model((4, 6, 9, 12), seed=0).state_dict()
    streams = [name for name in ours if name.startswith(("s2.", "enmap."))]
    assert streams and set(streams) <= set(report.loaded)
    for name in streams:
        assert torch.equal(ours[name], theirs[name]), name  # the checkpoint's weights
    heads = [name for name in ours if name.startswith("heads.") and ours[name].shape != theirs[name].shape]
    assert heads and sorted(report.reinitialised) == sorted(heads)  # every head of another shape, listed
    for name in heads:
        assert torch.equal(ours[name], fresh[name]), name  # a fresh model's (same seed): re-initialised
    assert report.left_out == [] and report.missing == []
    assert len(report.loaded) + len(report.reinitialised) == len(ours)
    summary = report.summary()
    assert summary["s2"] == {"loaded": len([n for n in ours if n.startswith("s2.")])}
    assert summary["enmap"] == {"loaded": len([n for n in ours if n.startswith("enmap.")])}
    assert summary["heads"]["reinitialised"] == len(heads)
    first = report.reinitialised[0]
    assert report.shapes[first] == [list(theirs[first].shape), list(ours[first].shape)]
    lines = report.lines()
    assert lines[0] == (
        f"start weights: {path} into the model: {len(report.loaded)} loaded, {len(heads)} re-initialised, "
        "0 left out, 0 missing (tensors)"
    )
    heads_line = next(line for line in lines if line.split()[0] == "heads")
    assert heads_line.endswith(f"{len(heads)} re-initialised")
    params = report.params()
    assert params["loaded"] == len(report.loaded) and params["heads.reinitialised"] == len(heads)
    assert params["kind"] == "h2crop" and params["source"] == str(path)
    assert report.to_dict()["counts"]["reinitialised"] == len(heads)


def test_other_streams_are_left_out_or_missing_and_nothing_fitting_is_refused(tmp_path):
    old = _model((3, 5, 8, 10), seed=1)
    path = _checkpoint(tmp_path, old, (3, 5, 8, 10))
    s2_only = _model((3, 5, 8, 10), seed=0, preset="tiny_crops_S2_P_jun")
    report = init_from_checkpoint(s2_only, path)
    assert report.summary()["enmap"] == {"left_out": len(old.enmap.state_dict())}  # no EnMAP stream here
    assert report.summary()["s2"] == {"loaded": len(old.s2.state_dict())}

    payload = {"state_dict": {"encoder.weight": torch.zeros(3)}, "model_config": {"name": "other"}}
    before = {k: v.clone() for k, v in s2_only.state_dict().items()}
    with pytest.raises(InitError, match=r"no weight of its streams \(other\) fits tiny_crops_S2_P_jun .*\(0 tensors"):
        init_from_checkpoint(s2_only, tmp_path / "x.ckpt", payload)
    assert all(torch.equal(before[k], v) for k, v in s2_only.state_dict().items())
    # a tiny preset's checkpoint into the full-size model: only BatchNorm counters and head biases would fit
    full = build_meta(get_preset("crops_S2_H_P_jun", num_classes=old.config.num_classes))
    with pytest.raises(InitError, match=r"no weight of its streams \(tiny_crops_S2_H_P_jun\) fits crops_S2_H_P_jun"):
        init_from_checkpoint(full, path)


def test_an_agrifm_import_reads_as_the_same_report():
    loaded = LoadReport(
        loaded=["patch_embed.proj.weight"], missing=["norm.weight"], unexpected=["HLS.x"], ignored=["a"]
    )
    report = InitReport.from_agrifm(loaded, "agrifm.pth")
    assert report.kind == "agrifm" and report.loaded == ["s2.encoder.patch_embed.proj.weight"]
    assert report.missing == ["s2.encoder.norm.weight"] and report.left_out == ["HLS.x", "a"]
    assert report.lines()[0].startswith("start weights: agrifm.pth into the S2 encoder: 1 loaded, 0 re-initialised")


def test_the_streams_to_freeze_are_the_models_own():
    s2_only = _model((3, 5, 8, 10), seed=0, preset="tiny_crops_S2_jun")
    both = _model((3, 5, 8, 10), seed=0)
    assert stream_modules(both, "streams") == {"s2": both.s2, "enmap": both.enmap}
    assert stream_modules(s2_only, "streams") == {"s2": s2_only.s2}  # every stream it has
    assert stream_modules(both, None) == {}
    with pytest.raises(
        SettingError, match=r"^freeze enmap: tiny_crops_S2_jun has no enmap stream \(its streams: s2\)$"
    ):
        stream_modules(s2_only, "enmap")
