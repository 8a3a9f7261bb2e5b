"""Weight initialisation shared by the transformer parts."""

from __future__ import annotations

from timm.layers import trunc_normal_
from torch import nn


def init_transformer_weights(module: nn.Module) -> None:
    """ViT/Swin initialisation, for ``module.apply``: truncated-normal (std 0.02) linear weights, zero
    biases, unit LayerNorms. Convolutions keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
