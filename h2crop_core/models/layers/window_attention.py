"""3-D window attention with a learned relative position bias (Video Swin), on fused SDPA.

The bias table holds one value per head for every (Δt, Δy, Δx) inside the largest window; windows that are
clamped to a small input (a time axis shorter than the window, a 6×6 last stage) look up the offsets they
actually contain. The bias (plus the shifted-window mask) is handed to SDPA as its additive ``attn_mask``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from timm.layers import trunc_normal_
from torch import Tensor, nn

from h2crop_core.errors import SettingError
from h2crop_core.models.layers.attention import AttentionImpl, attend, split_heads
from h2crop_core.models.layers.tensor_cache import tensor_cache

Size3 = tuple[int, int, int]


@tensor_cache(maxsize=64)
def relative_position_index(window: Size3, max_window: Size3, device: torch.device) -> Tensor:
    """(N, N) row of the bias table for every token pair of a ``window`` (N = wd·wh·ww tokens).

    Offsets are encoded against ``max_window`` (the table's size), so a clamped window reads the same
    table entries as the same offsets would in a full window.
    """
    coords = torch.stack(torch.meshgrid(*(torch.arange(n, device=device) for n in window), indexing="ij"))
    coords = rearrange(coords, "three d h w -> three (d h w)")
    relative = coords[:, :, None] - coords[:, None, :]  # (3, N, N), each in [-(w-1), w-1]
    span_h, span_w = 2 * max_window[1] - 1, 2 * max_window[2] - 1
    return (
        (relative[0] + max_window[0] - 1) * span_h * span_w
        + (relative[1] + max_window[1] - 1) * span_w
        + (relative[2] + max_window[2] - 1)
    )


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3-D windows, with a relative position bias per head.

    Parameter names follow Video Swin / AgriFM (``relative_position_bias_table``, ``qkv``, ``proj``) so
    pretrained weights load by name.

    Args:
        dim: token width.
        num_heads: attention heads.
        window_size: the largest (time, height, width) window; sets the bias table's size.
        qkv_bias: learn a bias in the q/k/v projection.
        impl: attention kernel, see :func:`~h2crop_core.models.layers.attention.attend`.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: Size3, qkv_bias: bool = True, impl: AttentionImpl = "sdpa"
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise SettingError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.impl: AttentionImpl = impl
        table_size = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size, num_heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, window: Size3) -> Tensor:
        """(heads, N, N) relative position bias of a ``window`` (at most :attr:`window_size`)."""
        index = relative_position_index(tuple(window), self.window_size, self.relative_position_bias_table.device)
        bias = self.relative_position_bias_table[index]  # (N, N, heads)
        return rearrange(bias, "n m h -> h n m")

    def forward(self, windows: Tensor, window: Size3, shift_mask: Tensor | None = None) -> Tensor:
        """Attend inside each window.

        Args:
            windows: (B·nW, N, C) tokens, windows of one image consecutive (batch-major).
            window: the (time, height, width) size of these windows, N = its product.
            shift_mask: (nW, N, N) additive mask separating regions that a cyclic shift brought together,
                or None for unshifted windows.

        Returns:
            (B·nW, N, C).
        """
        q, k, v = split_heads(self.qkv(windows), self.num_heads)
        bias = self.position_bias(window).unsqueeze(0)  # (1, heads, N, N): broadcast over windows
        if shift_mask is not None:
            num_windows = shift_mask.shape[0]
            bias = bias + shift_mask.unsqueeze(1).to(bias.dtype)  # (nW, heads, N, N)
            # SDPA takes a 4-D mask whose batch axis is 1 or B·nW: repeat the per-window mask per image.
            bias = bias.repeat(windows.shape[0] // num_windows, 1, 1, 1)
        out = attend(q, k, v, bias=bias, impl=self.impl)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
