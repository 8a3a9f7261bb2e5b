"""Multi-head attention kernels: fused scaled-dot-product attention, or the plain softmax(QKᵀ)V baseline.

Every attention in the model goes through :func:`attend`, so one switch (``impl``) moves the whole model
between PyTorch's fused kernels and the textbook formula the research code used. The benchmark runs both
in the same process to measure what the fused path buys.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from h2crop_core.errors import SettingError

AttentionImpl = Literal["sdpa", "plain"]
ATTENTION_IMPLS: tuple[str, ...] = ("sdpa", "plain")


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, impl: AttentionImpl = "sdpa") -> Tensor:
    """softmax(q kᵀ / √d + bias) v for (batch, heads, tokens, head_dim) tensors.

    Args:
        q: queries (B, H, Nq, D).
        k: keys (B, H, Nk, D).
        v: values (B, H, Nk, D).
        bias: additive attention bias broadcastable to (B, H, Nq, Nk), e.g. a relative position bias; it
            may require grad (the fused kernels that cannot differentiate through it fall back to PyTorch's
            math kernel by themselves).
        impl: ``"sdpa"`` for :func:`torch.nn.functional.scaled_dot_product_attention`, ``"plain"`` for the
            explicit formula that materialises the attention matrix.

    Returns:
        (B, H, Nq, D) attention output.
    """
    if impl == "sdpa":
        if bias is not None:
            bias = bias.to(q.dtype)  # SDPA wants the mask in the query's dtype (bf16 under autocast)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if impl == "plain":
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if bias is not None:
            scores = scores + bias
        return scores.softmax(dim=-1) @ v
    raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")


def split_heads(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, N, 3·C) fused projections -> q, k, v each (B, H, N, C/H), contiguous.

    The CPU flash kernel runs about twice as fast on contiguous inputs as on strided views of the fused
    projection, and the copy is cheap next to the attention itself.
    """
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=num_heads).contiguous().unbind(0)
    return q, k, v


class Attention(nn.Module):
    """Global multi-head self-attention (timm ``Attention`` parameter names: ``qkv``, ``proj``).

    Args:
        dim: token width.
        num_heads: attention heads; ``dim`` must be divisible by it.
        qkv_bias: learn a bias in the q/k/v projection.
        impl: attention kernel, see :func:`attend`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise SettingError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.impl: AttentionImpl = impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        q, k, v = split_heads(self.qkv(x), self.num_heads)
        out = attend(q, k, v, impl=self.impl)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
