"""The dual-stream hierarchical crop model: S2 temporal Swin + EnMAP spectral-spatial transformer, fused,
then cascaded heads for the four taxonomy levels.

Call it with the sample vocabulary as keyword tensors::

    model = DualStreamModel(get_preset("crops_S2_H_P_jun"))
    logits = model(s2=batch["s2"], enmap=batch["enmap"], prior=batch["prior"])
    # or: model(**model.inputs(batch))
    # logits: list of (B, n_k, H, W) float32 maps, one per predicted level

``s2`` is (B, T, 10, H, W) z-scored (T = the config's months, H and W multiples of 32), ``enmap`` is
(B, bands, H/3, W/3) z-scored, ``prior`` is (B, 4, H, W) integer class ids with 255 for unlabelled.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from h2crop_core.models.enmap import EnMAPStream
from h2crop_core.models.fusion import build_fusion
from h2crop_core.models.heads import HierarchicalHeads
from h2crop_core.models.layers import cat_channels, convs_to_channels_last
from h2crop_core.models.pixel import PixelBranch
from h2crop_core.models.presets import ModelConfig
from h2crop_core.models.s2_swin import S2Stream, SwinGeometry


class DualStreamModel(nn.Module):
    """S2 stream (+ EnMAP stream, fusion) + hierarchical heads, built from a :class:`ModelConfig`.

    Attributes:
        s2: :class:`~h2crop_core.models.s2_swin.S2Stream`.
        enmap: :class:`~h2crop_core.models.enmap.EnMAPStream` or None.
        fusion: fusion module or None (S2 alone).
        heads: :class:`~h2crop_core.models.heads.HierarchicalHeads`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        impl = config.attention
        geometry = SwinGeometry(config.months, config.s2_embed_dim, config.s2_patch[0], config.time_steps)
        self.s2 = S2Stream(
            geometry,
            in_channels=config.s2_bands,
            depths=config.s2_depths,
            num_heads=config.s2_heads,
            window_size=config.s2_window,
            patch_size=config.s2_patch,
            mlp_ratio=config.s2_mlp_ratio,
            drop_path_rate=config.s2_drop_path,
            impl=impl,
        )
        self.enmap: EnMAPStream | None = None
        self.fusion: nn.Module | None = None
        width = self.s2.out_channels
        if config.use_enmap:
            self.enmap = EnMAPStream(
                bands=config.enmap_bands,
                branches=config.enmap_branches,  # type: ignore[arg-type]
                out_channels=config.enmap_channels,
                upscale=config.enmap_upscale,
                spatial=dict(
                    dim=config.spatial_dim,
                    depth=config.spatial_depth,
                    num_heads=config.spatial_heads,
                    patch=config.spatial_patch,
                    mlp_ratio=config.enmap_mlp_ratio,
                ),
                spectral=dict(
                    grid=config.spectral_grid,
                    depth=config.spectral_depth,
                    num_heads=config.spectral_heads,
                    map_size=config.spectral_map_size,
                    mlp_ratio=config.enmap_mlp_ratio,
                ),
                impl=impl,
            )
            self.fusion = build_fusion(
                config.fusion,
                width,
                self.enmap.out_channels,
                config.fusion_heads,
                config.enmap_upscale,
                impl,  # type: ignore[arg-type]
            )
            width = self.fusion.out_channels
        self.pixel: PixelBranch | None = None
        if config.pixel_branch:
            enmap_bands = config.enmap_bands if config.use_enmap else 0
            classes = (
                [config.num_classes[level - 1] for level in config.levels] if config.pixel_join == "logits" else []
            )
            self.pixel = PixelBranch(
                config.months,
                config.s2_bands,
                enmap_bands,
                config.pixel_branch,
                config.enmap_upscale,
                classes,
                inputs=config.pixel_inputs,
                noise=config.pixel_noise,
            )
            width += self.pixel.out_channels if config.pixel_join == "concat" else 0
        self.heads = HierarchicalHeads(width, config.num_classes, config.levels, config.use_prior)
        self.set_checkpointing(config.checkpointing)
        if config.channels_last:
            convs_to_channels_last(self)
        if config.compile:
            self.compile_blocks()

    # ---------------------------------------------------------------------------------------- forward
    def forward(
        self, s2: Tensor, enmap: Tensor | None = None, prior: Tensor | None = None
    ) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """Per-level logits (in training mode with ``pixel_loss``: and the pixel branch's own, a pair for
        :func:`~h2crop_core.models.loss.model_loss`).

        Args:
            s2: (B, T, bands, H, W) Sentinel-2 series.
            enmap: (B, bands, H/3, W/3) hyperspectral cube; required when the config uses EnMAP.
            prior: (B, 4, H, W) last year's class ids (255 = unlabelled); required when the config uses priors.

        Returns:
            One (B, n_k, H, W) float32 logits map per predicted level, level 1 first.
        """
        self.s2.check_input(s2)
        if self.enmap is not None:
            if enmap is None:
                raise ValueError(f"{self.config.name} uses EnMAP: pass enmap=(B, bands, H/3, W/3)")
            factor = self.config.enmap_upscale
            if any(side % factor for side in s2.shape[-2:]) or tuple(enmap.shape[-2:]) != tuple(
                side // factor for side in s2.shape[-2:]
            ):
                raise ValueError(
                    f"EnMAP tile {tuple(enmap.shape[-2:])} must be the S2 tile {tuple(s2.shape[-2:])} / {factor} "
                    f"(with EnMAP, S2 tile sides are multiples of {factor} and of 32)"
                )
        autocast = self.config.precision == "bf16" and s2.device.type in ("cpu", "cuda")
        with torch.autocast(device_type=s2.device.type if autocast else "cpu", dtype=torch.bfloat16, enabled=autocast):
            features = self.s2(s2)
            if self.enmap is not None and self.fusion is not None:
                features = self.fusion(features, self.enmap(enmap))  # type: ignore[arg-type]
            pixel = self.pixel(s2, enmap) if self.pixel is not None else None
            if pixel is not None and self.config.pixel_join == "concat":
                features = cat_channels([features, pixel])
            logits = self.heads(features, prior)
            own = self.pixel.classify(pixel) if pixel is not None and self.config.pixel_join == "logits" else []
            logits = [level + extra for level, extra in zip(logits, own, strict=True)] if own else logits
        logits = [level.float() for level in logits]
        if self.training and self.config.pixel_loss:
            return logits, [level.float() for level in own]
        return logits

    def inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The entries of a sample batch this model reads, as keyword arguments for :meth:`forward`."""
        missing = [key for key in self.config.input_keys if key not in batch]
        if missing:
            raise KeyError(f"{self.config.name} needs batch keys {list(self.config.input_keys)}; missing {missing}")
        return {key: batch[key] for key in self.config.input_keys}

    # -------------------------------------------------------------------------------------- execution
    def transformer_containers(self) -> list[nn.Module]:
        """Modules holding transformer blocks (Swin stages, EnMAP branches): the unit of checkpointing."""
        return [m for m in self.modules() if hasattr(m, "checkpointing") and hasattr(m, "blocks")]

    def set_checkpointing(self, enabled: bool) -> None:
        """Recompute every transformer block in backward instead of storing its activations."""
        for module in self.transformer_containers():
            module.checkpointing = enabled

    def compile_blocks(self) -> None:
        """``torch.compile`` each transformer block in place (parameter names are unchanged)."""
        for module in self.transformer_containers():
            for block in module.blocks:
                block.compile()
