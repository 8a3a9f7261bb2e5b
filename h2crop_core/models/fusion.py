"""Fusion of the S2 and EnMAP feature maps (both (B, C, H, W) on the S2 grid) before the heads.

``concat`` is the benchmark's (no learned fusion at all); ``gated`` and ``cross_attention`` are options for
sweeps, each to be measured against it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.errors import SettingError
from h2crop_core.models.layers import AttentionImpl, attend, cat_channels

FusionKind = Literal["concat", "gated", "cross_attention"]
FUSIONS: tuple[str, ...] = ("concat", "gated", "cross_attention")


class ConcatFusion(nn.Module):
    """Channel concatenation: (B, Cs, H, W), (B, Ce, H, W) -> (B, Cs + Ce, H, W)."""

    def __init__(self, s2_channels: int, enmap_channels: int) -> None:
        super().__init__()
        self.out_channels = s2_channels + enmap_channels

    def forward(self, s2: Tensor, enmap: Tensor) -> Tensor:
        return cat_channels([s2, enmap])


class GatedFusion(nn.Module):
    """A learned per-pixel, per-channel gate between the streams: g·s2 + (1 − g)·enmap with
    g = sigmoid(1×1 conv of both). Lets the model lean on S2 where EnMAP is uninformative (and back).

    Both streams must have the same channels; the output has that many.
    """

    def __init__(self, s2_channels: int, enmap_channels: int) -> None:
        super().__init__()
        if s2_channels != enmap_channels:
            raise SettingError(f"gated fusion needs equal channels, got S2 {s2_channels} and EnMAP {enmap_channels}")
        self.gate = nn.Conv2d(2 * s2_channels, s2_channels, kernel_size=1)
        self.out_channels = s2_channels

    def forward(self, s2: Tensor, enmap: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate(cat_channels([s2, enmap])))
        return gate * s2 + (1 - gate) * enmap


class CrossAttentionFusion(nn.Module):
    """S2 pixels attend to EnMAP tokens, then the result is concatenated with the EnMAP map.

    Queries are the S2 features at every pixel; keys and values are the EnMAP features average-pooled
    back to the EnMAP grid (one token per 30 m pixel, ``upscale``² fewer than S2 pixels). The attended
    features are added to the S2 features (pre-norm residual), so at initialisation the fusion is close to
    ``concat``. Output channels: Cs + Ce.

    Args:
        s2_channels: S2 feature channels (query width).
        enmap_channels: EnMAP feature channels (key/value width).
        num_heads: attention heads; ``s2_channels`` must be divisible by it.
        upscale: S2 pixels per EnMAP pixel side.
        impl: attention kernel.
    """

    def __init__(
        self, s2_channels: int, enmap_channels: int, num_heads: int = 4, upscale: int = 3, impl: AttentionImpl = "sdpa"
    ) -> None:
        super().__init__()
        if s2_channels % num_heads:
            raise SettingError(f"S2 width {s2_channels} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.upscale = upscale
        self.impl: AttentionImpl = impl
        self.norm_q = nn.LayerNorm(s2_channels)
        self.norm_kv = nn.LayerNorm(enmap_channels)
        self.q = nn.Linear(s2_channels, s2_channels)
        self.kv = nn.Linear(enmap_channels, 2 * s2_channels)
        self.proj = nn.Linear(s2_channels, s2_channels)
        self.out_channels = s2_channels + enmap_channels

    def forward(self, s2: Tensor, enmap: Tensor) -> Tensor:
        height = s2.shape[-2]
        queries = rearrange(s2, "b c h w -> b (h w) c")
        pooled = F.avg_pool2d(enmap, kernel_size=self.upscale)
        keys = self.norm_kv(rearrange(pooled, "b c h w -> b (h w) c"))
        q = rearrange(self.q(self.norm_q(queries)), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(keys), "b n (two h d) -> two b h n d", two=2, h=self.num_heads).contiguous().unbind(0)
        attended = self.proj(rearrange(attend(q.contiguous(), k, v, impl=self.impl), "b h n d -> b n (h d)"))
        s2 = rearrange(queries + attended, "b (h w) c -> b c h w", h=height)
        return cat_channels([s2, enmap])


def build_fusion(
    kind: FusionKind,
    s2_channels: int,
    enmap_channels: int,
    num_heads: int = 4,
    upscale: int = 3,
    impl: AttentionImpl = "sdpa",
) -> nn.Module:
    """The fusion module named ``kind``; its ``out_channels`` attribute gives the fused width."""
    if kind == "concat":
        return ConcatFusion(s2_channels, enmap_channels)
    if kind == "gated":
        return GatedFusion(s2_channels, enmap_channels)
    if kind == "cross_attention":
        return CrossAttentionFusion(s2_channels, enmap_channels, num_heads=num_heads, upscale=upscale, impl=impl)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {kind!r}")
