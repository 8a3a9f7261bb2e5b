"""3-D window geometry of (shifted) window attention: sizes, partition/reverse, the shift mask."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from h2crop_core.models.layers.tensor_cache import tensor_cache

Size3 = tuple[int, int, int]
#: score added between tokens that a cyclic shift brought into one window from different regions (Swin's
#: value; softmax turns it into exactly 0 in fp32 and bf16 while staying finite, so rows never become NaN).
SHIFT_MASK_VALUE = -100.0


def clamp_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Window and shift actually used on an input of ``size`` (D, H, W).

    An axis no longer than the window is covered by one window spanning all of it, with no shift (so a
    short time axis is attended to as a whole).
    """
    use_window = tuple(s if s <= w else w for s, w in zip(size, window))
    use_shift = tuple(0 if s <= w else sh for s, w, sh in zip(size, window, shift))
    return use_window, use_shift  # type: ignore[return-value]


def padded_size(size: Size3, window: Size3) -> Size3:
    """``size`` rounded up to multiples of ``window`` on each axis."""
    return tuple(-(-s // w) * w for s, w in zip(size, window))  # type: ignore[return-value]


def partition(x: Tensor, window: Size3) -> Tensor:
    """(B, D, H, W, C) -> (B·nW, wd·wh·ww, C); D, H, W must be multiples of the window."""
    return rearrange(x, "b (d wd) (h wh) (w ww) c -> (b d h w) (wd wh ww) c", wd=window[0], wh=window[1], ww=window[2])


def reverse(windows: Tensor, window: Size3, size: Size3) -> Tensor:
    """Inverse of :func:`partition`: (B·nW, N, C) -> (B, D, H, W, C) for a padded ``size``."""
    d, h, w = (s // n for s, n in zip(size, window))
    return rearrange(
        windows,
        "(b d h w) (wd wh ww) c -> b (d wd) (h wh) (w ww) c",
        d=d,
        h=h,
        w=w,
        wd=window[0],
        wh=window[1],
        ww=window[2],
    )


@tensor_cache(maxsize=64)
def shift_mask(size: Size3, window: Size3, shift: Size3, device: torch.device) -> Tensor:
    """(nW, N, N) additive mask for shifted windows on a padded input of ``size``.

    After the cyclic roll, a window at the far edge holds tokens from up to 3 regions per axis that were
    not neighbours; tokens attend only within their own region.
    """
    region = torch.zeros((1, *size, 1), device=device)
    label = 0
    for d in (slice(-window[0]), slice(-window[0], -shift[0] or None), slice(-shift[0] or size[0], None)):
        for h in (slice(-window[1]), slice(-window[1], -shift[1] or None), slice(-shift[1] or size[1], None)):
            for w in (slice(-window[2]), slice(-window[2], -shift[2] or None), slice(-shift[2] or size[2], None)):
                region[:, d, h, w, :] = label
                label += 1
    labels = partition(region, window).squeeze(-1)  # (nW, N)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)
