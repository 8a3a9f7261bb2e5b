"""Import of AgriFM-format pre-trained weights into the S2 stream (the self-contained h2crop checkpoint
is :mod:`h2crop_core.checkpoint`).

AgriFM (the S2 stream's pre-trained backbone) ships mmengine-style files: ``{"state_dict": {...}, "meta":
...}``, keys optionally prefixed ``module.`` (saved from DistributedDataParallel), the S2 patch embedding
under ``S2_patch_emd.`` (other sensors' embeddings beside it) and the Swin under ``backbone.``. Our encoder
uses the same module names below those prefixes, so the import is a rename plus checks. Unlike mmengine's
non-strict loading, a tensor whose shape differs from ours is an error, never a silent skip: a skipped
patch embedding leaves the backbone reading features it was never trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from h2crop_core.errors import H2CropError
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.s2_swin import SwinEncoder3D

#: (AgriFM prefix, ours) applied in order, after stripping ``module.``/``encoder.``.
AGRIFM_RENAMES: tuple[tuple[str, str], ...] = (
    ("S2_patch_emd.", "patch_embed."),
    ("patch_emd.", "patch_embed."),
    ("backbone.", ""),
)
#: buffers AgriFM saves that we recompute from the window size.
DERIVED_SUFFIXES: tuple[str, ...] = ("relative_position_index", "attn_mask")


class WeightImportError(H2CropError):
    """Weights that cannot be imported as asked (unreadable file, no tensors, or mismatched shapes)."""


@dataclass
class LoadReport:
    """What a weight import did.

    Attributes:
        loaded: our parameter/buffer names that received a tensor.
        missing: our names the file had nothing for (they keep their initial values).
        unexpected: file names (after renaming) with no counterpart here, e.g. other sensors' embeddings.
        ignored: file entries we recompute instead (relative position indices, attention masks).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors, {len(self.missing)} missing, {len(self.unexpected)} unexpected"]
        if self.missing:
            lines.append("  missing: " + ", ".join(self.missing[:8]) + (" ..." if len(self.missing) > 8 else ""))
        if self.unexpected:
            lines.append(
                "  unexpected: " + ", ".join(self.unexpected[:8]) + (" ..." if len(self.unexpected) > 8 else "")
            )
        return "\n".join(lines)


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a checkpoint file (or an already loaded object): its ``state_dict`` (or ``model``)
    entry when present, else the mapping itself. Loaded with ``weights_only=True``: no code runs."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise WeightImportError(f"{path}: checkpoint not found")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for corrupt or non-tensor pickles
            raise WeightImportError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise WeightImportError(f"checkpoint holds a {type(obj).__name__}, expected a dict of tensors")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightImportError("checkpoint has no tensors (looked in 'state_dict', 'model' and the top level)")
    return state


def agrifm_key(key: str) -> str:
    """An AgriFM key in our encoder's naming: ``module.S2_patch_emd.proj.weight`` -> ``patch_embed.proj.weight``."""
    for prefix in ("module.", "encoder."):
        key = key.removeprefix(prefix)
    for theirs, ours in AGRIFM_RENAMES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


def load_agrifm(target: DualStreamModel | SwinEncoder3D, source: str | Path | Mapping[str, Any]) -> LoadReport:
    """Load AgriFM-format weights into the S2 encoder of ``target``.

    Args:
        target: a model (its ``s2.encoder`` is loaded) or the encoder itself.
        source: checkpoint path or loaded object.

    Returns:
        What was loaded, missing and unexpected.

    Raises:
        WeightImportError: if the file is unreadable, or any tensor's shape differs from ours (the patch
            embedding's with a hint: the research models use (2, 4, 4) tubelets, AgriFM's pre-training others).
    """
    encoder = target.s2.encoder if isinstance(target, DualStreamModel) else target
    own = encoder.state_dict()
    report = LoadReport()
    accepted: dict[str, Tensor] = {}
    for raw_key, tensor in read_state_dict(source).items():
        key = agrifm_key(raw_key)
        if key.endswith(DERIVED_SUFFIXES):
            report.ignored.append(raw_key)
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(own[key].shape):
            hint = ""
            if key.startswith("patch_embed."):
                hint = (
                    f"; the patch embedding must match exactly (ours: {encoder.patch_embed.proj.in_channels} bands, "
                    f"tubelet {encoder.patch_embed.patch_size}, width {encoder.patch_embed.proj.out_channels}) - set "
                    "ModelConfig.s2_patch / s2_embed_dim to the checkpoint's"
                )
            raise WeightImportError(
                f"{raw_key} -> {key}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(own[key].shape)}{hint}"
            )
        else:
            accepted[key] = tensor
    encoder.load_state_dict(accepted, strict=False)
    report.loaded = sorted(accepted)
    report.missing = sorted(set(own) - set(accepted))
    return report
