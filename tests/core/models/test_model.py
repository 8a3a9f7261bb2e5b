"""The assembled model: every preset builds, runs forward and backward, with the right shapes; generality
(months, bands, tile sizes, class counts); execution options that must not change the maths."""

from __future__ import annotations

import pytest
import torch

from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.models import get_preset, preset_names
from h2crop_core.models.summary import build_meta, example_inputs
from tests.core.models.conftest import SMALL_TILE, build, random_inputs, training_loss, twins


@pytest.mark.parametrize("name", preset_names())
def test_every_tiny_preset_runs_forward_and_backward(name: str) -> None:
    config = get_preset("tiny_" + name)
    model = build(config)
    logits = model(**random_inputs(config, batch=1))
    expected = [(1, config.num_classes[level - 1], SMALL_TILE, SMALL_TILE) for level in config.levels]
    assert [tuple(level.shape) for level in logits] == expected
    assert all(level.dtype == torch.float32 and torch.isfinite(level).all() for level in logits)
    training_loss(logits).backward()


@pytest.mark.parametrize("name", ["crops_S2_H_aug", "crops_S2_H_dec", "crops_S2_H_P_oct", "level2_crops_S2_H_P_jun"])
def test_full_presets_run_forward_and_backward_on_meta(name: str) -> None:
    """Full size without the compute: the research code's S2+H aug/dec configs crashed on channels."""
    config = get_preset(name)
    model = build_meta(config)
    logits = model(**example_inputs(config))
    assert [tuple(level.shape) for level in logits] == [(1, config.num_classes[k - 1], 192, 192) for k in config.levels]
    sum(level.sum() for level in logits).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"fusion": "gated"},
        {"fusion": "cross_attention"},
        {"enmap_branches": "spatial", "spatial_patch": 2},
        {"enmap_branches": "spectral"},
    ],
    ids=["concat", "gated", "cross_attention", "patched_spatial", "spectral"],
)
def test_every_parameter_receives_a_gradient(overrides: dict) -> None:
    # no stochastic depth: a dropped residual branch legitimately gets no gradient in that step
    config = get_preset("tiny_crops_S2_H_P_jun", s2_drop_path=0.0, **overrides)
    model = build(config)
    training_loss(model(**random_inputs(config))).backward()
    without = [name for name, p in model.named_parameters() if p.grad is None]
    assert not without, f"parameters without gradient: {without}"
    zero = [name for name, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"parameters whose gradient is identically zero: {zero}"


@pytest.mark.parametrize("months", [1, 5, 7, 9, 11, 12])
def test_any_number_of_months(months: int) -> None:
    config = get_preset("tiny_crops_S2_P_jun", window=months)
    model = build(config)
    logits = model(**random_inputs(config, batch=1))
    assert logits[-1].shape == (1, 102, SMALL_TILE, SMALL_TILE)
    assert model.s2.geometry.frames[-1] == 1  # the last stage always ends with a single frame


def test_odd_months_last_frame_is_not_diluted_by_padding() -> None:
    """With T=5 the patch embedding yields 3 frames; merging must keep the 3rd as is (not halve it)."""
    config = get_preset("tiny_crops_S2_jun", window=5)
    model = build(config).eval()
    encoder = model.s2.encoder
    s2 = random_inputs(config, batch=1)["s2"]
    captured: dict[str, torch.Tensor] = {}
    stage = encoder.layers[0]
    stage.blocks[-1].register_forward_hook(lambda module, args, out: captured.setdefault("before", out))
    stage.downsample.register_forward_hook(lambda module, args, out: captured.setdefault("after", out))
    with torch.no_grad():
        model(s2=s2)
    before = captured["before"]  # (1, 3, H, W, C): three frames going into the first merging
    assert before.shape[1] == 3
    merging = stage.downsample
    expected = merging.reduction(
        merging.norm(
            torch.cat(
                [
                    before[:, 2:3, 0::2, 0::2],
                    before[:, 2:3, 1::2, 0::2],
                    before[:, 2:3, 0::2, 1::2],
                    before[:, 2:3, 1::2, 1::2],
                ],
                dim=-1,
            )
        )
    )
    torch.testing.assert_close(captured["after"][:, 1:2], expected)


@pytest.mark.parametrize("bands", [200, 218, 239])
def test_any_band_count(bands: int) -> None:
    config = get_preset("tiny_crops_S2_H_jun", enmap_bands=bands)
    model = build(config)
    inputs = random_inputs(config, batch=1)
    assert inputs["enmap"].shape[1] == bands
    training_loss(model(**inputs)).backward()
    with pytest.raises(ValueError, match=f"{bands} bands"):
        model(s2=inputs["s2"], enmap=inputs["enmap"][:, :-1])


@pytest.mark.parametrize("tile", [64, 160, 224])
def test_s2_takes_any_tile_divisible_by_32(tile: int) -> None:
    config = get_preset("tiny_crops_S2_P_jun")
    logits = build(config)(**random_inputs(config, batch=1, tile=tile))
    assert logits[0].shape[-2:] == (tile, tile)


@pytest.mark.parametrize(
    "overrides", [{}, {"enmap_branches": "spatial", "spatial_patch": 2}, {"fusion": "cross_attention"}]
)
def test_enmap_models_take_tiles_divisible_by_32_and_3(overrides: dict) -> None:
    """The EnMAP tile is a third of the S2 tile, so S2 sides are multiples of 96 (EnMAP 32, 64, 96 px)."""
    config = get_preset("tiny_crops_S2_H_P_jun", **overrides)
    model = build(config)
    for tile in (96, 288):
        assert model(**random_inputs(config, batch=1, tile=tile))[0].shape[-2:] == (tile, tile)


def test_bad_tiles_and_missing_inputs_are_clear_errors() -> None:
    config = get_preset("tiny_crops_S2_H_P_jun")
    model = build(config)
    inputs = random_inputs(config, batch=1)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(
            s2=inputs["s2"][..., :81, :81], enmap=inputs["enmap"][..., :27, :27], prior=inputs["prior"][..., :81, :81]
        )
    with pytest.raises(ValueError, match="S2 tile"):
        model(s2=inputs["s2"], enmap=inputs["enmap"][..., :16, :16], prior=inputs["prior"])
    with pytest.raises(ValueError, match="T=6"):
        model(s2=inputs["s2"][:, :5], enmap=inputs["enmap"], prior=inputs["prior"])
    with pytest.raises(ValueError, match="uses EnMAP"):
        model(s2=inputs["s2"], prior=inputs["prior"])
    with pytest.raises(ValueError, match="prior"):
        model(s2=inputs["s2"], enmap=inputs["enmap"])
    with pytest.raises(KeyError, match="prior"):
        model.inputs({"s2": inputs["s2"], "enmap": inputs["enmap"]})


def test_class_counts_come_from_the_taxonomy() -> None:
    taxonomy = generate_taxonomy((3, 5, 9, 12), seed=1)
    config = get_preset("tiny_crops_S2_P_jun", num_classes=taxonomy.num_classes)
    logits = build(config)(**random_inputs(config, batch=1))
    assert [level.shape[1] for level in logits] == [4, 6, 10, 13]


def test_unlabelled_prior_is_an_all_zero_one_hot() -> None:
    """255 in the prior must behave like 'no information', not like a class id."""
    config = get_preset("tiny_crops_S2_P_jun")
    model = build(config).eval()
    inputs = random_inputs(config, batch=1)
    heads = model.heads
    features = torch.randn(1, heads.heads["level1"][0].in_channels - 7, 8, 8)
    unlabelled = torch.full((1, 4, 8, 8), 255, dtype=torch.uint8)
    zero_prior_inputs = torch.cat([features, torch.zeros(1, 7, 8, 8)], dim=1)
    with torch.no_grad():
        expected = heads.heads["level1"](zero_prior_inputs)
        torch.testing.assert_close(heads(features, unlabelled)[0], expected)
        assert torch.isfinite(model(**inputs)[0]).all()


def test_plain_attention_matches_fused_attention() -> None:
    config = get_preset("tiny_crops_S2_H_P_jun")
    fused, plain = (model.eval() for model in twins(config, attention="plain"))
    inputs = random_inputs(config, batch=1)
    with torch.no_grad():
        for a, b in zip(fused(**inputs), plain(**inputs)):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    config = get_preset("tiny_crops_S2_H_P_jun", s2_drop_path=0.0)
    plain, checkpointed = twins(config, checkpointing=True)
    inputs = random_inputs(config, batch=1)
    for model in (plain, checkpointed):
        training_loss(model(**inputs)).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_precision_runs_and_stays_close_to_fp32() -> None:
    config = get_preset("tiny_crops_S2_H_P_jun")
    fp32, bf16 = (model.eval() for model in twins(config, precision="bf16"))
    inputs = random_inputs(config, batch=1)
    with torch.no_grad():
        reference, low = fp32(**inputs), bf16(**inputs)
    for a, b in zip(reference, low):
        assert b.dtype == torch.float32
        scale = a.abs().mean()
        assert (a - b).abs().mean() < 0.05 * scale
