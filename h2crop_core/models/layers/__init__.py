"""Small reusable blocks of the h2crop models, one per module (timm ``layers/`` style)."""

from h2crop_core.models.layers.attention import ATTENTION_IMPLS, Attention, AttentionImpl, attend, split_heads
from h2crop_core.models.layers.conv import ConvBNReLUConv, conv3x3
from h2crop_core.models.layers.init import init_transformer_weights
from h2crop_core.models.layers.memory_format import cat_channels, convs_to_channels_last, is_channels_last
from h2crop_core.models.layers.patch_embed import PatchEmbed3D
from h2crop_core.models.layers.patch_merging import PatchMerging3D, merge_time
from h2crop_core.models.layers.pos_embed import sinusoid_table
from h2crop_core.models.layers.swin_block import SwinBlock3D
from h2crop_core.models.layers.transformer_block import TransformerBlock
from h2crop_core.models.layers.window_attention import WindowAttention3D, relative_position_index

__all__ = [
    "ATTENTION_IMPLS",
    "Attention",
    "AttentionImpl",
    "ConvBNReLUConv",
    "PatchEmbed3D",
    "PatchMerging3D",
    "SwinBlock3D",
    "TransformerBlock",
    "WindowAttention3D",
    "attend",
    "cat_channels",
    "conv3x3",
    "convs_to_channels_last",
    "init_transformer_weights",
    "is_channels_last",
    "merge_time",
    "relative_position_index",
    "sinusoid_table",
    "split_heads",
]
