"""Video Swin Transformer block: (shifted) 3-D window attention and an MLP, pre-norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from h2crop_core.models.layers.attention import AttentionImpl
from h2crop_core.models.layers.window_attention import WindowAttention3D
from h2crop_core.models.layers.windows import Size3, clamp_window, padded_size, partition, reverse, shift_mask


class SwinBlock3D(nn.Module):
    """One Swin block on a (B, D, H, W, C) channels-last volume.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: largest (time, height, width) window.
        shifted: shift windows by half a window (odd blocks of a stage), so information crosses windows.
        mlp_ratio: MLP hidden width / dim.
        qkv_bias: learn a bias in the q/k/v projection.
        drop_path: stochastic-depth rate.
        impl: attention kernel.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size3,
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in window_size) if shifted else (0, 0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, self.window_size, qkv_bias=qkv_bias, impl=impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def _attention(self, x: Tensor) -> Tensor:
        size: Size3 = tuple(x.shape[1:4])  # type: ignore[assignment]
        window, shift = clamp_window(size, self.window_size, self.shift_size)
        padded = padded_size(size, window)
        # pad after the norm with zeros at the far end of each axis, as Video Swin does
        x = F.pad(x, (0, 0, 0, padded[2] - size[2], 0, padded[1] - size[1], 0, padded[0] - size[0]))
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        mask = shift_mask(padded, window, shift, x.device) if shifted else None
        windows = self.attn(partition(x, window), window, mask)
        x = reverse(windows, window, padded)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, : size[0], : size[1], : size[2]]

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, H, W, C) -> (B, D, H, W, C)."""
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
