"""AgriFM-format imports into the S2 stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from h2crop_core.models import get_preset
from h2crop_core.models.pretrained import WeightImportError, load_agrifm
from tests.core.models.conftest import build


def agrifm_state(model, prefix: str = "") -> dict[str, torch.Tensor]:
    """The S2 encoder's weights as AgriFM names them, with fresh values."""
    state = {}
    for key, tensor in model.s2.encoder.state_dict().items():
        name = key.replace("patch_embed.", "S2_patch_emd.", 1) if key.startswith("patch_embed.") else "backbone." + key
        state[prefix + name] = torch.randn_like(tensor)
    return state


def test_import_with_module_prefix_and_renames(tmp_path: Path) -> None:
    model = build(get_preset("tiny_crops_S2_H_P_jun"))
    state = agrifm_state(model, prefix="module.")
    state["module.HLSL30_patch_emd.proj.weight"] = torch.randn(16, 6, 2, 4, 4)  # another sensor's embedding
    state["module.backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(3, 3, dtype=torch.long)
    path = tmp_path / "agrifm.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": state}, path)
    report = load_agrifm(model, path)
    encoder = model.s2.encoder.state_dict()
    torch.testing.assert_close(encoder["patch_embed.proj.weight"], state["module.S2_patch_emd.proj.weight"])
    torch.testing.assert_close(
        encoder["layers.2.blocks.1.mlp.fc2.bias"], state["module.backbone.layers.2.blocks.1.mlp.fc2.bias"]
    )
    assert report.missing == []
    assert report.unexpected == ["HLSL30_patch_emd.proj.weight"]
    assert len(report.loaded) == len(encoder)
    assert report.ignored == ["module.backbone.layers.0.blocks.0.attn.relative_position_index"]
    assert "1 unexpected" in report.summary()


def test_missing_keys_are_reported_and_keep_their_values(tmp_path: Path) -> None:
    model = build(get_preset("tiny_crops_S2_jun"))
    before = {k: v.clone() for k, v in model.s2.encoder.state_dict().items()}
    state = {k: v for k, v in agrifm_state(model).items() if not k.startswith("backbone.layers.3.")}
    report = load_agrifm(model, state)  # an already-loaded bare state dict works too
    assert report.missing and all(k.startswith("layers.3.") for k in report.missing)
    after = model.s2.encoder.state_dict()
    for key in report.missing:
        torch.testing.assert_close(after[key], before[key])
    assert not torch.equal(after["layers.0.blocks.0.attn.qkv.weight"], before["layers.0.blocks.0.attn.qkv.weight"])


def test_mismatched_patch_embedding_is_an_error_not_a_skip(tmp_path: Path) -> None:
    model = build(get_preset("tiny_crops_S2_jun"))
    state = agrifm_state(model)
    state["S2_patch_emd.proj.weight"] = torch.randn(16, 10, 4, 4, 4)  # AgriFM pre-training used (4, 4, 4) tubelets
    path = tmp_path / "agrifm.pth"
    torch.save({"state_dict": state}, path)
    before = model.s2.encoder.state_dict()["layers.0.blocks.0.attn.qkv.weight"].clone()
    with pytest.raises(
        WeightImportError, match=r"S2_patch_emd.proj.weight.*\(16, 10, 4, 4, 4\).*\(16, 10, 2, 4, 4\).*patch embedding"
    ):
        load_agrifm(model, path)
    # nothing was half-loaded
    torch.testing.assert_close(model.s2.encoder.state_dict()["layers.0.blocks.0.attn.qkv.weight"], before)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    model = build(get_preset("tiny_crops_S2_jun"))
    with pytest.raises(WeightImportError, match="not found"):
        load_agrifm(model, tmp_path / "absent.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightImportError, match="not a readable"):
        load_agrifm(model, broken)
