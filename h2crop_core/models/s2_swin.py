"""Sentinel-2 stream: a temporal Video Swin encoder (AgriFM's backbone) and an FPN-style decoder.

Shapes for the benchmark's ``jun`` window (T=6, 192×192 tiles, widths 128/256/512/1024)::

    s2 (B, 6, 10, 192, 192) -> patch embedding (B, 128, 3, 48, 48)
    stage 0  -> merge (time ÷2)  (B, 256, 2, 24, 24)
    stage 1  -> merge (time ÷2)  (B, 512, 1, 12, 12)
    stage 2  -> merge (time ÷1)  (B, 1024, 1, 6, 6)
    stage 3, LayerNorm            (B, 1024, 1, 6, 6)

The decoder folds time into channels (384@48², 512@24², 512@12², 1024@6²), walks back up with skip
connections and returns (B, 128, 192, 192).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from h2crop_core.errors import SettingError
from h2crop_core.models.layers import (
    AttentionImpl,
    ConvBNReLUConv,
    PatchEmbed3D,
    PatchMerging3D,
    SwinBlock3D,
    cat_channels,
    init_transformer_weights,
)

#: S2 tiles must be divisible by this: a 4-pixel patch embedding then three 2× merges.
S2_TILE_MULTIPLE = 32


def default_time_steps(months: int) -> tuple[int, int, int]:
    """Frames averaged by the three patch mergings: (2, 2, 1) up to 8 months, (2, 2, 2) beyond (the
    benchmark's ``jun``/``aug`` and ``oct``/``dec`` settings), so the last stage always has one frame."""
    return (2, 2, 1) if months <= 8 else (2, 2, 2)


def frames_per_level(months: int, time_patch: int, time_steps: Sequence[int]) -> tuple[int, int, int, int]:
    """Frames left after the patch embedding and after each merging, e.g. T=6 -> (3, 2, 1, 1)."""
    frames = [-(-months // time_patch)]
    for step in time_steps:
        frames.append(-(-frames[-1] // step))
    return tuple(frames)  # type: ignore[return-value]


@dataclass(frozen=True)
class SwinGeometry:
    """Channels of the four multi-scale features (time folded into channels), coarse last."""

    months: int
    embed_dim: int
    time_patch: int
    time_steps: tuple[int, int, int]

    @property
    def frames(self) -> tuple[int, int, int, int]:
        return frames_per_level(self.months, self.time_patch, self.time_steps)

    @property
    def feature_channels(self) -> tuple[int, int, int, int]:
        """(patch embedding, stage 0, stage 1, last stage) channels, e.g. (384, 512, 512, 1024) for T=6."""
        widths = (self.embed_dim, 2 * self.embed_dim, 4 * self.embed_dim, 8 * self.embed_dim)
        return tuple(w * f for w, f in zip(widths, self.frames))  # type: ignore[return-value]


class SwinStage(nn.Module):
    """Swin blocks alternating plain and shifted windows, then an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: tuple[int, int, int],
        mlp_ratio: float,
        drop_path: Sequence[float],
        time_step: int | None,
        impl: AttentionImpl,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock3D(
                dim, num_heads, window_size, shifted=i % 2 == 1, mlp_ratio=mlp_ratio, drop_path=drop_path[i], impl=impl
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging3D(dim, time_step) if time_step is not None else None
        self.checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, H, W, C) -> (B, D', H/2, W/2, 2C), or unchanged shape without merging."""
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinEncoder3D(nn.Module):
    """Temporal Video Swin Transformer. Module names mirror AgriFM's (``patch_embed``, ``layers.i.blocks.j``,
    ``layers.i.downsample``, ``norm``) so its released weights load by name; see
    :mod:`h2crop_core.models.pretrained`.

    Args:
        in_channels: bands per frame.
        embed_dim: width of the first stage (doubles per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: (time, height, width) attention window.
        patch_size: (time, height, width) of a patch-embedding tubelet.
        time_steps: frames averaged by each of the three patch mergings.
        mlp_ratio: MLP hidden width / width.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        impl: attention kernel.
    """

    def __init__(
        self,
        in_channels: int = 10,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: tuple[int, int, int] = (8, 7, 7),
        patch_size: tuple[int, int, int] = (2, 4, 4),
        time_steps: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4 or len(time_steps) != 3:
            raise SettingError("the S2 encoder has 4 stages (depths, num_heads) and 3 patch mergings (time_steps)")
        self.patch_embed = PatchEmbed3D(in_channels, embed_dim, patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(4)]
        self.layers = nn.ModuleList(
            SwinStage(
                embed_dim * 2**i,
                depths[i],
                num_heads[i],
                window_size,
                mlp_ratio,
                rates[starts[i] : starts[i] + depths[i]],
                time_steps[i] if i < 3 else None,
                impl,
            )
            for i in range(4)
        )
        self.norm = nn.LayerNorm(embed_dim * 8)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, T, H, W) -> four (B, C_i·D_i, H/4/2^i, W/4/2^i) features with time folded into channels:
        the patch embedding, the outputs of stages 0 and 1 (after merging) and the normed last stage."""
        x = self.patch_embed(x)
        features = [rearrange(x, "b c d h w -> b (c d) h w")]
        x = rearrange(x, "b c d h w -> b d h w c")
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if i < 2:
                features.append(rearrange(x, "b d h w c -> b (c d) h w"))
        # the output of stage 2 only feeds stage 3, as in the research model
        features.append(rearrange(self.norm(x), "b d h w c -> b (c d) h w"))
        return features


class FPNDecoder(nn.Module):
    """Top-down decoder: from the coarsest feature, repeatedly upsample ×2, concatenate the skip feature
    and refine with conv-BN-ReLU-conv (halving the width), then a last refinement and bilinear ×4 to the
    input resolution.

    Args:
        feature_channels: channels of the four encoder features, finest first.
    """

    def __init__(self, feature_channels: Sequence[int]) -> None:
        super().__init__()
        width = feature_channels[-1]
        self.fusion_list = nn.ModuleList()
        for skip in reversed(feature_channels[:-1]):
            self.fusion_list.append(ConvBNReLUConv(width + skip, width, width // 2))
            width //= 2
        self.out_conv = ConvBNReLUConv(width, width, width)
        self.out_channels = width

    def forward(self, features: Sequence[Tensor], out_size: tuple[int, int]) -> Tensor:
        """Four features, finest first -> (B, out_channels, *out_size)."""
        x = features[-1]
        for fusion, skip in zip(self.fusion_list, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fusion(cat_channels([x, skip]))
        x = self.out_conv(x)
        return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)


class S2Stream(nn.Module):
    """Encoder + decoder: (B, T, C, H, W) Sentinel-2 time series -> (B, out_channels, H, W) features.

    Args:
        geometry: months, width and time steps (fixes the decoder's channels).
        encoder: keyword arguments of :class:`SwinEncoder3D`.
    """

    def __init__(self, geometry: SwinGeometry, **encoder: object) -> None:
        super().__init__()
        self.geometry = geometry
        self.encoder = SwinEncoder3D(embed_dim=geometry.embed_dim, time_steps=geometry.time_steps, **encoder)  # type: ignore[arg-type]
        self.decoder = FPNDecoder(geometry.feature_channels)
        self.out_channels = self.decoder.out_channels

    def check_input(self, s2: Tensor) -> None:
        """Raise an error naming the problem if ``s2`` is not (B, T, bands, H, W) with this model's T (a
        ValueError: the caller's reader fixes T) and tile sides divisible by 32 (a SettingError: the data's or
        the ``--tile`` setting's size)."""
        if s2.ndim != 5 or s2.shape[1] != self.geometry.months:
            raise ValueError(
                f"s2 must be (B, T={self.geometry.months}, bands, H, W) for this model, got {tuple(s2.shape)}"
            )
        height, width = s2.shape[-2:]
        if height % S2_TILE_MULTIPLE or width % S2_TILE_MULTIPLE:
            raise SettingError(f"S2 tile sides must be multiples of {S2_TILE_MULTIPLE}, got {height}×{width}")

    def forward(self, s2: Tensor) -> Tensor:
        """(B, T, bands, H, W) -> (B, out_channels, H, W)."""
        self.check_input(s2)
        features = self.encoder(rearrange(s2, "b t c h w -> b c t h w"))
        return self.decoder(features, (s2.shape[-2], s2.shape[-1]))
