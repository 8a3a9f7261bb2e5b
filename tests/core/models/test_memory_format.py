"""Channels-last convolutions: same numbers as NCHW, NHWC tensors where it pays, loadable either way."""

from __future__ import annotations

import torch
from torch import nn

from h2crop_core.models import get_preset
from h2crop_core.models.layers import cat_channels, is_channels_last
from tests.core.models.conftest import random_inputs, training_loss, twins


def test_cat_channels_goes_nhwc_when_any_input_is_nhwc() -> None:
    nchw = torch.randn(2, 3, 5, 7)
    nhwc = torch.randn(2, 4, 5, 7).contiguous(memory_format=torch.channels_last)
    mixed = cat_channels([nchw, nhwc])
    assert is_channels_last(mixed)
    torch.testing.assert_close(mixed, torch.cat([nchw, nhwc], dim=1), rtol=0, atol=0)
    plain = cat_channels([nchw, nchw])
    assert plain.is_contiguous() and not is_channels_last(plain)


def test_is_channels_last_ignores_ambiguous_layouts() -> None:
    # a single channel or a 1×1 map is both contiguous and channels-last: not a reason to convert
    assert not is_channels_last(torch.randn(2, 1, 4, 4))
    assert not is_channels_last(torch.randn(2, 8, 1, 1))
    assert is_channels_last(torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last))


def test_channels_last_model_matches_nchw_in_values_and_gradients() -> None:
    config = get_preset("tiny_crops_S2_H_P_jun", s2_drop_path=0.0, channels_last=False)
    nchw, nhwc = twins(config, channels_last=True)
    assert all(
        is_channels_last(m.weight) for m in nhwc.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1
    )
    assert not any(is_channels_last(m.weight) for m in nchw.modules() if isinstance(m, nn.Conv2d))
    inputs = random_inputs(config, batch=1)
    outputs = []
    for model in (nchw, nhwc):
        logits = model(**inputs)
        training_loss(logits).backward()
        outputs.append(logits)
    # the heads' inputs (features, previous logits, prior one-hot) are concatenated NHWC, so the logits are too
    assert all(is_channels_last(level) for level in outputs[1])
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for (name, a), (_, b) in zip(nchw.named_parameters(), nhwc.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_channels_last_weights_load_into_an_nchw_model() -> None:
    config = get_preset("tiny_crops_S2_H_jun")
    nhwc, nchw = (model.eval() for model in twins(config, channels_last=False))  # loads NHWC weights into NCHW
    inputs = random_inputs(config, batch=1)
    with torch.no_grad():
        for a, b in zip(nhwc(**inputs), nchw(**inputs)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
