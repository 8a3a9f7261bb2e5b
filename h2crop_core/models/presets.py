"""Model configuration and the named presets of the benchmark grid.

A preset is a function returning a :class:`ModelConfig`; an experiment is a preset plus overrides
(``dataclasses.replace``). Names follow the research configs:

* ``crops_S2[_H][_P]_{jun,aug,oct,dec}``: S2 alone, + hyperspectral (H), + last year's crop (P), for the
  four temporal windows (16 presets);
* ``level{1..4}_crops_S2_H_P_jun``: one level only, no cascade (4 presets);
* ``tiny_<name>`` for each: the same structure at small widths, for CPU tests, demos and sweeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from h2crop_core.data.schema import WINDOWS, window_months
from h2crop_core.errors import SettingError
from h2crop_core.models.enmap import ENMAP_BRANCHES
from h2crop_core.models.fusion import FUSIONS
from h2crop_core.models.layers import ATTENTION_IMPLS
from h2crop_core.models.pixel import PIXEL_INPUTS, PIXEL_JOINS
from h2crop_core.models.s2_swin import default_time_steps

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: classes per level (background included) of the benchmark's taxonomy; use a Taxonomy's ``num_classes``.
H2CROP_NUM_CLASSES = (7, 37, 83, 102)
TINY_PREFIX = "tiny_"


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a :class:`~h2crop_core.models.model.DualStreamModel`.

    The defaults are the benchmark's S2+H+P model for the ``jun`` window.
    """

    name: str = "custom"
    # inputs and outputs
    window: str | int = "jun"  #: temporal window: jun/aug/oct/dec or a number of months 1..12
    use_enmap: bool = True
    use_prior: bool = True
    levels: tuple[int, ...] = (1, 2, 3, 4)  #: predicted levels; one level = "independent head"
    num_classes: tuple[int, ...] = H2CROP_NUM_CLASSES  #: per level 1..4, background included
    # Sentinel-2 stream: temporal Swin
    s2_bands: int = 10
    s2_embed_dim: int = 128
    s2_depths: tuple[int, ...] = (2, 2, 18, 2)
    s2_heads: tuple[int, ...] = (4, 8, 16, 32)
    s2_window: tuple[int, int, int] = (8, 7, 7)
    s2_patch: tuple[int, int, int] = (2, 4, 4)
    s2_time_steps: tuple[int, int, int] | None = None  #: frames averaged per merging; None = by window
    s2_mlp_ratio: float = 4.0
    s2_drop_path: float = 0.2
    # EnMAP stream: spectral-spatial transformer
    enmap_bands: int = 218
    enmap_branches: str = "both"
    enmap_channels: int = 128
    enmap_upscale: int = 3  #: S2 pixels per EnMAP pixel side
    spatial_dim: int = 768
    spatial_depth: int = 6
    spatial_heads: int = 12
    spatial_patch: int = 1  #: 2 = the cheaper branch on 2×2 pixel patches
    spectral_grid: int = 16  #: band tokens are the band image pooled to grid×grid (token width grid²)
    spectral_depth: int = 6
    spectral_heads: int = 8
    spectral_map_size: int = 64
    enmap_mlp_ratio: float = 4.0
    # fusion
    fusion: str = "concat"
    fusion_heads: int = 4
    #: channels of the optional per-pixel branch (each pixel's S2 series and EnMAP spectrum, no spatial
    #: mixing) concatenated to the fused features; 0 = off, as in the benchmark (h2crop_core/models/pixel.py)
    pixel_branch: int = 0
    #: how the per-pixel branch joins: ``concat`` to the fused features before the heads, or ``logits``: its
    #: own 1×1 classifier per level whose logits are added to the heads' (a per-pixel model beside the
    #: spatial one, and the heads keep their width)
    pixel_join: str = "concat"
    #: what the per-pixel branch reads: ``all`` (S2 series and EnMAP spectrum) or ``enmap`` (the spectrum alone:
    #: on small sets each parcel's S2 offsets let a per-pixel model memorise parcels; benchmarks/small_data.py)
    pixel_inputs: str = "all"
    #: std of Gaussian noise added to the branch's (normalised) inputs while training: a per-pixel model then
    #: cannot key on a parcel's exact values
    pixel_noise: float = 0.0
    #: with ``pixel_join="logits"``: weight of the branch's own loss on its logits alone, beside the model's,
    #: so it learns as a per-pixel classifier even once the spatial heads fit the training pixels
    pixel_loss: float = 0.0
    # execution (no effect on the weights)
    precision: str = "fp32"
    attention: str = "sdpa"
    checkpointing: bool = False  #: recompute transformer blocks in backward to save memory
    compile: bool = False  #: torch.compile each transformer block
    channels_last: bool = True  #: 2-D convolutions in NHWC layout (oneDNN/cuDNN run bf16 convolutions natively so)

    def __post_init__(self) -> None:
        window_months(self.window)
        checks = {
            "precision": (self.precision, PRECISIONS),
            "attention": (self.attention, ATTENTION_IMPLS),
            "fusion": (self.fusion, FUSIONS),
            "enmap_branches": (self.enmap_branches, ENMAP_BRANCHES),
            "pixel_join": (self.pixel_join, PIXEL_JOINS),
            "pixel_inputs": (self.pixel_inputs, PIXEL_INPUTS),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise SettingError(f"ModelConfig.{key} must be one of {allowed}, got {value!r}")
        if len(self.num_classes) != 4:
            raise SettingError(f"num_classes needs the four levels' class counts, got {self.num_classes}")
        self._check_pixel_branch()

    def _check_pixel_branch(self) -> None:
        if any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in (self.pixel_noise, self.pixel_loss)
        ):
            raise SettingError(
                f"ModelConfig.pixel_noise and pixel_loss are >= 0, got {self.pixel_noise!r} and {self.pixel_loss!r}"
            )
        if self.pixel_inputs == "enmap" and not self.use_enmap:
            raise SettingError(f"ModelConfig.pixel_inputs=enmap needs EnMAP; {self.name} uses S2 alone")
        if self.pixel_loss and self.pixel_join != "logits":
            raise SettingError(
                f"ModelConfig.pixel_loss trains the pixel branch's own classifier: it needs pixel_join=logits, got {self.pixel_join!r}"
            )

    @property
    def months(self) -> int:
        """Number of S2 frames T the model takes."""
        return window_months(self.window)

    @property
    def time_steps(self) -> tuple[int, int, int]:
        return tuple(self.s2_time_steps) if self.s2_time_steps else default_time_steps(self.months)  # type: ignore[return-value]

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Sample keys the model reads."""
        return ("s2",) + (("enmap",) if self.use_enmap else ()) + (("prior",) if self.use_prior else ())

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output (lists become tuples again); unknown keys are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingError(f"unknown ModelConfig keys {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


# -------------------------------------------------------------------------------------------- presets
def crops_preset(window: str, hyperspectral: bool, prior: bool) -> ModelConfig:
    """The benchmark's cascaded model: S2, optionally + EnMAP (H) and last year's crop (P)."""
    name = "crops_S2" + ("_H" if hyperspectral else "") + ("_P" if prior else "") + f"_{window}"
    return ModelConfig(name=name, window=window, use_enmap=hyperspectral, use_prior=prior)


def single_level_preset(level: int) -> ModelConfig:
    """S2+H+P, ``jun``, predicting one level with an independent head."""
    return ModelConfig(name=f"level{level}_crops_S2_H_P_jun", window="jun", levels=(level,))


def tiny(config: ModelConfig) -> ModelConfig:
    """``config`` at small widths and depths, same structure (4 Swin stages with shifted windows, both
    EnMAP branches, the same heads and inputs). A training step takes well under a second per 192×192
    sample on a CPU."""
    return config.replace(
        name=TINY_PREFIX + config.name,
        s2_embed_dim=16,
        s2_depths=(2, 2, 2, 2),
        s2_heads=(1, 2, 4, 8),
        enmap_channels=16,
        spatial_dim=32,
        spatial_depth=2,
        spatial_heads=2,
        spectral_grid=4,
        spectral_depth=2,
        spectral_heads=2,
        spectral_map_size=16,
        fusion_heads=2,
    )


def _grid() -> dict[str, Callable[[], ModelConfig]]:
    presets: dict[str, Callable[[], ModelConfig]] = {}
    for hyperspectral in (False, True):
        for prior in (False, True):
            for window in WINDOWS:
                config = crops_preset(window, hyperspectral, prior)
                presets[config.name] = lambda w=window, h=hyperspectral, p=prior: crops_preset(w, h, p)
    for level in range(1, 5):
        presets[f"level{level}_crops_S2_H_P_jun"] = lambda k=level: single_level_preset(k)
    return presets


#: name -> function building the full-size preset (20 entries); ``tiny_`` names resolve in :func:`get_preset`.
PRESETS: dict[str, Callable[[], ModelConfig]] = _grid()


def preset_names(tiny_too: bool = False) -> list[str]:
    """The 20 full-size preset names (and their 20 ``tiny_`` versions)."""
    names = list(PRESETS)
    return names + [TINY_PREFIX + n for n in names] if tiny_too else names


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` (``tiny_`` prefix allowed) with ``overrides`` applied."""
    base = name.removeprefix(TINY_PREFIX)
    if base not in PRESETS:
        raise SettingError(
            f"unknown preset {name!r}; known: {', '.join(PRESETS)} (each also with a {TINY_PREFIX!r} prefix)"
        )
    config = PRESETS[base]()
    if name.startswith(TINY_PREFIX):
        config = tiny(config)
    return config.replace(**overrides) if overrides else config
