"""h2crop models: the dual-stream hierarchical crop classifier, its presets and tools."""

from h2crop_core.models.heads import decode_argmax, decode_consistent, hierarchy_disagreement
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import PRESETS, ModelConfig, get_preset, preset_names

__all__ = [
    "PRESETS",
    "DualStreamModel",
    "ModelConfig",
    "decode_argmax",
    "decode_consistent",
    "get_preset",
    "hierarchy_disagreement",
    "preset_names",
]
