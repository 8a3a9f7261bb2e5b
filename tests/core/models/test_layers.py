"""The building blocks: time merging, window geometry, relative position bias, attention kernels."""

from __future__ import annotations

import itertools

import pytest
import torch

from h2crop_core.models.layers import PatchMerging3D, WindowAttention3D, attend, merge_time, relative_position_index
from h2crop_core.models.layers.windows import clamp_window, partition, reverse, shift_mask


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 7, 8])
def test_merge_time_averages_only_real_frames(frames: int) -> None:
    x = torch.randn(2, frames, 4, 4, 3)
    merged = merge_time(x, 2)
    assert merged.shape[1] == -(-frames // 2)
    for group in range(merged.shape[1]):
        real = x[:, 2 * group : 2 * group + 2]
        torch.testing.assert_close(merged[:, group], real.mean(dim=1))
    if frames % 2:  # the last month stands alone: kept, not halved by a zero frame
        torch.testing.assert_close(merged[:, -1], x[:, -1])


def test_patch_merging_neighbour_order_matches_video_swin() -> None:
    """Channels [x(0,0), x(1,0), x(0,1), x(1,1)] (y, x offsets), so pretrained reductions apply."""
    layer = PatchMerging3D(dim=2, time_step=1)
    layer.norm = torch.nn.Identity()
    layer.reduction = torch.nn.Identity()
    x = torch.randn(1, 1, 4, 4, 2)
    out = layer(x)
    expected = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1)
    torch.testing.assert_close(out, expected)


def test_relative_position_index_encodes_offsets() -> None:
    window, max_window = (3, 4, 2), (8, 7, 7)
    index = relative_position_index(window, max_window, torch.device("cpu"))
    coords = list(itertools.product(*(range(n) for n in window)))
    span_h, span_w = 2 * max_window[1] - 1, 2 * max_window[2] - 1
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            offset = [x - y + m - 1 for x, y, m in zip(a, b, max_window)]
            assert index[i, j] == offset[0] * span_h * span_w + offset[1] * span_w + offset[2]


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 4, 14, 21, 5)
    window = (2, 7, 7)
    windows = partition(x, window)
    assert windows.shape == (2 * 2 * 2 * 3, 2 * 7 * 7, 5)
    torch.testing.assert_close(reverse(windows, window, (4, 14, 21)), x)


def test_clamped_axes_are_neither_windowed_nor_shifted() -> None:
    window, shift = clamp_window((3, 48, 6), (8, 7, 7), (4, 3, 3))
    assert window == (3, 7, 6)
    assert shift == (0, 3, 0)


def test_shift_mask_only_separates_tokens_from_different_regions() -> None:
    size, window, shift = (1, 14, 14), (1, 7, 7), (0, 3, 3)
    mask = shift_mask(size, window, shift, torch.device("cpu"))
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all()  # the first window holds one region: nothing masked
    assert (mask[-1] < 0).any()  # the corner window mixes wrapped-around regions
    assert torch.equal(mask, mask.transpose(1, 2))
    assert (torch.diagonal(mask, dim1=1, dim2=2) == 0).all()


def test_sdpa_and_plain_attention_agree_with_bias_and_gradients() -> None:
    q, k, v = (torch.randn(3, 2, 10, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 2, 10, 10, dtype=torch.float64, requires_grad=True)
    outputs, grads = [], []
    for impl in ("sdpa", "plain"):
        out = attend(q, k, v, bias=bias, impl=impl)
        (out * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        outputs.append(out.detach())
        grads.append([t.grad.clone() for t in (q, k, v, bias)])
        for t in (q, k, v, bias):
            t.grad = None
    torch.testing.assert_close(outputs[0], outputs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_window_attention_bias_reaches_the_table() -> None:
    attention = WindowAttention3D(dim=8, num_heads=2, window_size=(2, 3, 3))
    windows = torch.randn(4, 2 * 3 * 3, 8)
    attention(windows, (2, 3, 3)).sum().backward()
    assert attention.relative_position_bias_table.grad is not None
    assert attention.relative_position_bias_table.grad.abs().sum() > 0


def test_constant_tensors_first_built_in_inference_mode_still_train() -> None:
    # Position tables, relative-position indexes and shift masks are cached per size: ones first built
    # while evaluating or mapping (under inference mode) must not break a later training step.
    from h2crop_core.models import DualStreamModel, get_preset
    from h2crop_core.models.layers import pos_embed, window_attention, windows
    from h2crop_core.models.summary import example_inputs

    for cached in (pos_embed._table, window_attention.relative_position_index, windows.shift_mask):
        cached.cache_clear()
    config = get_preset("tiny_crops_S2_H_P_jun")
    model = DualStreamModel(config)
    inputs = example_inputs(config, batch=1, tile=96, device="cpu", generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.eval()(**inputs)
    assert windows.shift_mask.cache_info().currsize and pos_embed._table.cache_info().currsize
    sum(level.mean() for level in model.train()(**inputs)).backward()
    assert all(p.grad is not None for p in model.parameters())
