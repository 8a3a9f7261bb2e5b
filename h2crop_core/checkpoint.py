"""The self-contained checkpoint shared by training, evaluation and mapping.

One file rebuilds the model *and* its input handling with nothing else: the model config (preset name plus
overrides, recorded whole), the weights, the taxonomy (as its CSV text), the normalisation statistics, the
temporal window and modalities, the input contract (what the input bands are: S2 band names and convention,
EnMAP centre wavelengths; :mod:`h2crop_core.products.contract`), and optionally training metadata (epoch,
metrics). It holds only tensors,
strings, numbers, lists and dicts, so it loads with ``torch.load(weights_only=True)``: opening a checkpoint
never runs code from it. Writes go to a temporary name and are renamed into place, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import SampleReader
from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.errors import H2CropError
from h2crop_core.files import write_atomic
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import ModelConfig
from h2crop_core.products.contract import ContractError, InputContract, contract_for
from h2crop_core.taxonomy import Taxonomy

FORMAT = "h2crop-checkpoint"
VERSION = 1


class CheckpointError(H2CropError):
    """A file that is not an h2crop checkpoint, or one that does not fit the code loading it."""


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns: a ready model plus everything needed to feed it."""

    model: DualStreamModel
    config: ModelConfig
    taxonomy: Taxonomy
    stats: NormStats
    spec: SampleSpec = H2CROP_SPEC
    meta: dict = field(default_factory=dict)
    #: what the input bands are; None for a checkpoint written before contracts (its inputs read by index)
    contract: InputContract | None = None

    @property
    def window(self) -> str | int:
        return self.config.window

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.input_keys

    def reader(self, with_label: bool = True) -> SampleReader:
        """A :class:`SampleReader` producing exactly the inputs this model was trained on."""
        modalities = self.modalities + (("label",) if with_label else ())
        if "prior" not in modalities:
            modalities += ("prior",)  # changed/unchanged scoring needs last year's crops even if the model does not
        return SampleReader(self.config.window, modalities, taxonomy=self.taxonomy, stats=self.stats, spec=self.spec)


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: ModelConfig,
    taxonomy: Taxonomy,
    stats: NormStats,
    *,
    spec: SampleSpec = H2CROP_SPEC,
    meta: dict | None = None,
    contract: InputContract | None = None,
) -> Path:
    """Write a self-contained checkpoint atomically.

    Args:
        model: the model (a DDP/compiled wrapper is unwrapped).
        config: its config; ``config.name`` is the preset, the rest its overrides.
        spec: the sample layout the model reads (tile size, band counts); the benchmark's by default.
        meta: JSON-like extras (epoch, metrics, run name, dataset fingerprint, ...).
        contract: what the input bands are (the dataset's ``input_contract.json``); by default
            :func:`~h2crop_core.products.contract.contract_for` ``spec``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)
    module = getattr(module, "_orig_mod", module)
    state = {key.removeprefix("_orig_mod."): value.detach().cpu() for key, value in module.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": config.to_dict(),
        "state_dict": state,
        "taxonomy_csv": taxonomy.to_csv_text(),
        "norm_stats": stats.to_dict(),
        "spec": dataclasses.asdict(spec),
        "input_contract": (contract or contract_for(spec)).to_dict(),
        "window": config.window,
        "modalities": list(config.input_keys),
        "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {})},
    }
    return write_atomic(path, lambda file: torch.save(payload, file))


def read_checkpoint(path: str | Path) -> dict:
    """The raw payload, verified to be an h2crop checkpoint of a version this code reads."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: expected an {FORMAT!r} file; found {type(payload).__name__} without that format tag"
        )
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload['version']} is newer than this h2crop reads ({VERSION})"
        )
    return payload


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", **config_overrides) -> LoadedCheckpoint:
    """Rebuild the model (eval mode) and its input handling from one file.

    Args:
        config_overrides: execution settings to change on load, e.g. ``precision="bf16"``.
    """
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload["model_config"])
    if config_overrides:
        config = config.replace(**config_overrides)
    model = DualStreamModel(config)
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{path}: weights do not fit {config.name}: {str(error)[:500]}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit {config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.to(device).eval()
    stats = NormStats.from_dict(payload["norm_stats"])
    taxonomy = Taxonomy.from_csv_text(payload["taxonomy_csv"], source=f"{path} (embedded)")
    spec = SampleSpec(**payload["spec"]) if "spec" in payload else H2CROP_SPEC
    return LoadedCheckpoint(model, config, taxonomy, stats, spec, payload.get("meta", {}), read_contract(payload, path))


def read_contract(payload: dict, path: str | Path) -> InputContract | None:
    """The checkpoint's input contract, or None for one written before contracts (read by index)."""
    if "input_contract" not in payload:
        return None
    try:
        return InputContract.from_dict(payload["input_contract"], source=f"{path} (input_contract)")
    except ContractError as error:
        raise CheckpointError(str(error)) from None
