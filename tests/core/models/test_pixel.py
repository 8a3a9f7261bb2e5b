"""The optional per-pixel branch: no spatial mixing, both ways of joining the model, its regularisers (the
spectrum alone, training noise, its own loss), off in every preset."""

import pytest
import torch

from h2crop_core.errors import SettingError
from h2crop_core.models.loss import hierarchical_loss, model_loss
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.pixel import PixelBranch
from h2crop_core.models.presets import get_preset, preset_names
from h2crop_core.taxonomy import UNLABELLED


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


def test_the_spectrum_alone_ignores_s2_and_noise_is_for_training_only():
    torch.manual_seed(0)
    branch = PixelBranch(months=6, s2_bands=10, enmap_bands=218, dim=8, upscale=3, inputs="enmap", noise=1.0)
    s2, enmap = torch.randn(1, 6, 10, 12, 12), torch.randn(1, 218, 4, 4)
    with torch.no_grad():
        branch.eval()
        clean = branch(s2, enmap)
        assert clean.shape == (1, 8, 12, 12) and branch.s2 is None
        assert torch.equal(branch(s2 + 5.0, enmap), clean), "S2 does not reach an EnMAP-only branch"
        branch.train()
        noisy = branch(s2, enmap), branch(s2, enmap)
    assert not torch.allclose(noisy[0], clean) and not torch.allclose(noisy[0], noisy[1])


def test_the_pixel_loss_trains_the_branch_classifier_on_its_own_logits():
    config = get_preset("tiny_crops_S2_H_jun", pixel_branch=8, pixel_join="logits", pixel_loss=0.5)
    torch.manual_seed(0)
    model = DualStreamModel(config).train()
    s2, enmap = torch.randn(1, 6, 10, 96, 96), torch.randn(1, 218, 32, 32)
    label = torch.stack([torch.randint(0, n, (1, 96, 96)) for n in config.num_classes], dim=1).to(torch.uint8)
    label[:, :, :48] = UNLABELLED
    logits, own = model(s2=s2, enmap=enmap)
    assert [tuple(level.shape[1:]) for level in own] == [(n, 96, 96) for n in config.num_classes]
    total = model_loss((logits, own), label, config.levels, config.pixel_loss)
    expected = hierarchical_loss(logits, label, config.levels) + 0.5 * hierarchical_loss(own, label, config.levels)
    assert torch.allclose(total, expected)
    # the extra term reaches the branch's classifier only through its own logits
    (grad,) = torch.autograd.grad(
        0.5 * hierarchical_loss(own, label, config.levels), [model.heads.heads["level1"][0].weight], allow_unused=True
    )
    assert grad is None
    assert isinstance(model.eval()(s2=s2, enmap=enmap), list), "evaluation sees the summed logits alone"


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"pixel_loss": 1.0}, "pixel_join=logits"),
        ({"pixel_join": "logits", "pixel_noise": -1.0}, "pixel_noise"),
        ({"pixel_join": "logits", "pixel_loss": "high"}, "pixel_loss"),
    ],
)
def test_inconsistent_pixel_settings_are_refused(overrides, key):
    with pytest.raises(SettingError, match=key):
        get_preset("tiny_crops_S2_H_jun", pixel_branch=8, **overrides)
    with pytest.raises(SettingError, match="pixel_inputs=enmap needs EnMAP"):
        get_preset("tiny_crops_S2_jun", pixel_branch=8, pixel_inputs="enmap")
