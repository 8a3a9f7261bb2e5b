"""Pre-norm Transformer block over a token sequence (ViT layout, timm parameter names)."""

from __future__ import annotations

from functools import partial

from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from h2crop_core.models.layers.attention import Attention, AttentionImpl

#: ViT blocks normalise with eps 1e-6 (timm's VisionTransformer default, which the EnMAP branches used).
ViTLayerNorm = partial(nn.LayerNorm, eps=1e-6)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)), GELU MLP.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        qkv_bias: learn a bias in the q/k/v projection.
        drop_path: stochastic-depth rate of both residual branches.
        impl: attention kernel.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = ViTLayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, impl=impl)
        self.norm2 = ViTLayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
