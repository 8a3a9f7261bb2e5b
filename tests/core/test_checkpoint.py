import numpy as np
import pytest
import torch

from h2crop_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import get_preset


def _parts(levels=(1, 2, 3, 4)):
    taxonomy = generate_taxonomy((3, 5, 8, 10), seed=1)
    config = get_preset("tiny_crops_S2_H_P_aug", levels=levels, num_classes=taxonomy.num_classes, enmap_bands=50)
    stats = NormStats(np.arange(10.0), np.ones(10) * 2, np.linspace(1, 2, 50), np.ones(50) * 3)
    torch.manual_seed(0)
    return DualStreamModel(config).eval(), config, taxonomy, stats


def test_round_trip_rebuilds_the_model_and_its_input_handling(tmp_path):
    model, config, taxonomy, stats = _parts()
    spec = SampleSpec(enmap_bands=50, size=96)
    path = save_checkpoint(tmp_path / "m.ckpt", model, config, taxonomy, stats, spec=spec, meta={"epoch": 3})
    torch.load(path, weights_only=True)  # plain data only: loading never runs code
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.taxonomy.names == taxonomy.names and loaded.spec == spec
    np.testing.assert_array_equal(loaded.stats.enmap_mean, stats.enmap_mean)
    assert loaded.meta["epoch"] == 3 and "created" in loaded.meta
    reader = loaded.reader()
    assert (
        reader.window == "aug" and reader.spec == spec and set(reader.modalities) == {"s2", "enmap", "prior", "label"}
    )
    batch = {
        "s2": torch.randn(1, 8, 10, 96, 96),
        "enmap": torch.randn(1, 50, 32, 32),
        "prior": torch.randint(0, 3, (1, 4, 96, 96)),
    }
    with torch.no_grad():
        for a, b in zip(model(**model.inputs(batch)), loaded.model(**loaded.model.inputs(batch))):
            torch.testing.assert_close(a, b)
    assert not loaded.model.training
    # execution settings may change on load
    assert load_checkpoint(path, precision="bf16").config.precision == "bf16"


def test_wrapped_models_are_unwrapped(tmp_path):
    model, config, taxonomy, stats = _parts(levels=(2,))
    wrapper = torch.nn.Module()
    wrapper.module = model  # like DistributedDataParallel
    path = save_checkpoint(tmp_path / "w.ckpt", wrapper, config, taxonomy, stats)
    assert all(not key.startswith("module.") for key in read_checkpoint(path)["state_dict"])
    assert load_checkpoint(path).config.levels == (2,)


def test_foreign_truncated_and_mismatched_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "none.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="expected an 'h2crop-checkpoint' file"):
        read_checkpoint(tmp_path / "foreign.pt")
    model, config, taxonomy, stats = _parts()
    path = save_checkpoint(tmp_path / "m.ckpt", model, config, taxonomy, stats)
    (tmp_path / "cut.ckpt").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "cut.ckpt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(tmp_path / "missing.ckpt")
    assert not list(tmp_path.glob(".*.partial"))  # atomic writes leave nothing behind
