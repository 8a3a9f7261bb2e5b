"""The optional per-pixel branch: no spatial mixing, both ways of joining the model, off in every preset."""

import pytest
import torch

from h2crop_core.errors import SettingError
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.pixel import PixelBranch
from h2crop_core.models.presets import get_preset, preset_names


def test_each_pixel_is_encoded_on_its_own():
    torch.manual_seed(0)
    branch = PixelBranch(months=6, s2_bands=10, enmap_bands=218, dim=8, upscale=3).eval()
    s2, enmap = torch.randn(1, 6, 10, 12, 12), torch.randn(1, 218, 4, 4)
    with torch.no_grad():
        before = branch(s2, enmap)
        s2[0, :, :, 5, 7] += 3.0  # one S2 pixel
        enmap[0, :, 0, 2] += 3.0  # one EnMAP pixel: S2 rows 0-2, columns 6-8
        changed = (branch(s2, enmap) - before).abs().amax(dim=1)[0] > 0
    assert before.shape == (1, 16, 12, 12)
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[5, 7] = True
    expected[0:3, 6:9] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("join", ["concat", "logits"])
def test_the_branch_joins_the_model_and_reaches_every_level(join):
    config = get_preset("tiny_crops_S2_H_jun", pixel_branch=8, pixel_join=join)
    faithful = DualStreamModel(get_preset("tiny_crops_S2_H_jun"))
    torch.manual_seed(0)
    model = DualStreamModel(config)
    head_width = model.heads.heads["level1"][0].in_channels
    assert head_width == faithful.heads.heads["level1"][0].in_channels + (16 if join == "concat" else 0)
    s2, enmap = torch.randn(1, 6, 10, 96, 96), torch.randn(1, 218, 32, 32)
    logits = model(s2=s2, enmap=enmap)
    assert [tuple(level.shape[1:]) for level in logits] == [(n, 96, 96) for n in config.num_classes]
    sum(level.sum() for level in logits).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pixel.parameters())


def test_every_preset_is_faithful_and_a_bad_join_is_refused():
    assert all(get_preset(name).pixel_branch == 0 for name in preset_names(tiny_too=True))
    with pytest.raises(SettingError, match="pixel_join"):
        get_preset("tiny_crops_S2_H_jun", pixel_join="sum")
