"""EnMAP stream: a spectral-spatial transformer over the hyperspectral cube, two branches in parallel.

Shapes for the benchmark (218 bands, 64×64 EnMAP pixels under a 192×192 S2 tile)::

    enmap (B, 218, 64, 64)
    spatial branch:  1×1 conv -> 4,096 pixel tokens of 768 -> 6 blocks, global attention
                     -> (B, 768, 64, 64) -> 3×3 conv to 128·9 -> pixel-shuffle ×3 -> (B, 128, 192, 192)
    spectral branch: 4×4 average pool -> 218 band tokens of 16·16 = 256 -> 6 blocks
                     -> Linear 256 -> 64·64 -> (B, 218, 64, 64) -> 3×3 conv, pixel-shuffle ×3 -> (B, 128, 192, 192)
    merge:           concat -> 3×3 conv 256->128, ReLU, 3×3 conv; refine: conv-BN-ReLU-conv -> (B, 128, 192, 192)

The spatial branch is most of the model's compute (global attention over 4,096 tokens), so it has a
cheaper option: ``spatial_patch=2`` embeds 2×2 pixel patches (1,024 tokens, 16× less attention).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from h2crop_core.errors import SettingError
from h2crop_core.models.layers import (
    AttentionImpl,
    ConvBNReLUConv,
    TransformerBlock,
    cat_channels,
    conv3x3,
    init_transformer_weights,
    sinusoid_table,
)

EnMAPBranches = Literal["both", "spatial", "spectral"]
ENMAP_BRANCHES: tuple[str, ...] = ("both", "spatial", "spectral")


class _TokenTransformer(nn.Module):
    """A stack of pre-norm blocks over a token sequence with a fixed sinusoidal position table."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, impl: AttentionImpl) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio, impl=impl) for _ in range(depth))
        self.checkpointing = False

    def run_blocks(self, tokens: Tensor) -> Tensor:
        tokens = tokens + sinusoid_table(tokens.shape[1], tokens.shape[2], tokens.device, tokens.dtype)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        return tokens


class SpatialBranch(_TokenTransformer):
    """One token per pixel (or per ``patch``×``patch`` pixels), global self-attention, then a convolution
    and pixel shuffle up to the S2 grid.

    Args:
        bands: input bands.
        dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        out_channels: channels of the output map.
        patch: pixels per token side (1 is the benchmark's; 2 gives 4× fewer tokens).
        upscale: S2 pixels per EnMAP pixel side.
        mlp_ratio: MLP hidden width / dim.
        impl: attention kernel.
    """

    def __init__(
        self,
        bands: int,
        dim: int = 768,
        depth: int = 6,
        num_heads: int = 12,
        out_channels: int = 128,
        patch: int = 1,
        upscale: int = 3,
        mlp_ratio: float = 4.0,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__(dim, depth, num_heads, mlp_ratio, impl)
        self.patch = patch
        self.patch_embed = nn.Conv2d(bands, dim, kernel_size=patch, stride=patch)
        self.out_conv = conv3x3(dim, out_channels * (upscale * patch) ** 2)
        self.pixel_shuffle = nn.PixelShuffle(upscale * patch)
        self.blocks.apply(init_transformer_weights)

    def forward(self, enmap: Tensor) -> Tensor:
        """(B, bands, h, w) -> (B, out_channels, upscale·h, upscale·w)."""
        if enmap.shape[-2] % self.patch or enmap.shape[-1] % self.patch:
            raise SettingError(
                f"EnMAP tile {tuple(enmap.shape[-2:])} is not divisible by the {self.patch}-pixel patches"
            )
        grid = self.patch_embed(enmap)
        tokens = self.run_blocks(rearrange(grid, "b c h w -> b (h w) c"))
        grid = rearrange(tokens, "b (h w) c -> b c h w", h=grid.shape[-2])
        return self.pixel_shuffle(self.out_conv(grid))


class SpectralBranch(_TokenTransformer):
    """One token per band: the band's image average-pooled to ``grid``×``grid`` values; attention runs
    across bands. A linear layer maps each token back to a ``map_size``×``map_size`` image.

    The token width is ``grid``², fixed by the weights, so other tile sizes are pooled to the same grid
    (the tile must be divisible by ``grid``) and the reconstructed maps are resized to the tile.

    Args:
        bands: input bands (= tokens).
        grid: pooled grid side; token width grid² (16 -> 256 for the benchmark's 64-pixel tiles).
        depth: transformer blocks.
        num_heads: attention heads.
        out_channels: channels of the output map.
        map_size: side of the reconstructed band images (the benchmark's EnMAP tile, 64).
        upscale: S2 pixels per EnMAP pixel side.
        mlp_ratio: MLP hidden width / token width.
        impl: attention kernel.
    """

    def __init__(
        self,
        bands: int,
        grid: int = 16,
        depth: int = 6,
        num_heads: int = 8,
        out_channels: int = 128,
        map_size: int = 64,
        upscale: int = 3,
        mlp_ratio: float = 4.0,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__(grid * grid, depth, num_heads, mlp_ratio, impl)
        self.grid = grid
        self.map_size = map_size
        self.out_post = nn.Linear(grid * grid, map_size * map_size)
        self.out_conv = conv3x3(bands, out_channels * upscale**2)
        self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.blocks.apply(init_transformer_weights)

    def forward(self, enmap: Tensor) -> Tensor:
        """(B, bands, h, w) -> (B, out_channels, upscale·h, upscale·w)."""
        height, width = enmap.shape[-2:]
        if height % self.grid or width % self.grid:
            raise SettingError(f"EnMAP tile {height}×{width} is not divisible by the spectral grid {self.grid}")
        pooled = F.avg_pool2d(enmap, kernel_size=(height // self.grid, width // self.grid))
        tokens = self.run_blocks(rearrange(pooled, "b c h w -> b c (h w)"))
        maps = rearrange(self.out_post(tokens), "b c (h w) -> b c h w", h=self.map_size)
        if (height, width) != (self.map_size, self.map_size):
            maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        return self.pixel_shuffle(self.out_conv(maps))


class EnMAPStream(nn.Module):
    """Spatial and/or spectral branch, merged, then refined: (B, bands, h, w) -> (B, out_channels, 3h, 3w).

    Args:
        bands: hyperspectral bands (218 EnMAP, 239 PRISMA, 200 AVIRIS, ...).
        branches: ``both`` (the benchmark's), ``spatial`` or ``spectral`` only.
        out_channels: output channels (also each branch's).
        upscale: S2 pixels per EnMAP pixel side.
        spatial: keyword arguments of :class:`SpatialBranch` (``dim``, ``depth``, ``num_heads``, ``patch``).
        spectral: keyword arguments of :class:`SpectralBranch` (``grid``, ``depth``, ``num_heads``, ``map_size``).
        impl: attention kernel.
    """

    def __init__(
        self,
        bands: int = 218,
        branches: EnMAPBranches = "both",
        out_channels: int = 128,
        upscale: int = 3,
        spatial: dict | None = None,
        spectral: dict | None = None,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        if branches not in ENMAP_BRANCHES:
            raise ValueError(f"EnMAP branches must be one of {ENMAP_BRANCHES}, got {branches!r}")
        self.bands = bands
        self.upscale = upscale
        self.spatial = (
            SpatialBranch(bands, out_channels=out_channels, upscale=upscale, impl=impl, **(spatial or {}))
            if branches in ("both", "spatial")
            else None
        )
        self.spectral = (
            SpectralBranch(bands, out_channels=out_channels, upscale=upscale, impl=impl, **(spectral or {}))
            if branches in ("both", "spectral")
            else None
        )
        num_branches = 2 if branches == "both" else 1
        self.merge = nn.Sequential(
            conv3x3(num_branches * out_channels, out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
        )
        self.refine = ConvBNReLUConv(out_channels, out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, enmap: Tensor) -> Tensor:
        if enmap.ndim != 4 or enmap.shape[1] != self.bands:
            raise ValueError(f"enmap must be (B, {self.bands} bands, h, w) for this model, got {tuple(enmap.shape)}")
        maps = [branch(enmap) for branch in (self.spatial, self.spectral) if branch is not None]
        return self.refine(self.merge(cat_channels(maps)))
