"""Fine-tuning: a new model's weights from an h2crop checkpoint (by name and shape), what the load did, and the
streams that can be frozen.

:func:`init_from_checkpoint` loads every tensor of a checkpoint whose name and shape match the model's: a
checkpoint trained for another taxonomy gives its streams (and whatever else fits), while the heads whose
class counts differ keep their fresh initialisation. The :class:`InitReport` says which tensors were loaded,
re-initialised (the shape differs), left out (the checkpoint's, with no counterpart here) or missing (the
model's, with nothing in the checkpoint), counted by top-level module (``s2``, ``enmap``, ``fusion``,
``pixel``, ``heads``). The AgriFM import's :class:`~h2crop_core.models.pretrained.LoadReport` is turned into
the same report (:meth:`InitReport.from_agrifm`). Checkpoints are read with ``torch.load(weights_only=True)``
(:func:`~h2crop_core.checkpoint.read_checkpoint`): opening one never runs code from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from h2crop_core.checkpoint import read_checkpoint
from h2crop_core.errors import H2CropError, SettingError
from h2crop_core.models.pretrained import LoadReport

#: what ``--freeze`` names -> the model's modules (``streams``: every stream the model has)
FREEZE_STREAMS: dict[str, tuple[str, ...]] = {"s2": ("s2",), "enmap": ("enmap",), "streams": ("s2", "enmap")}
#: the model's streams: a start checkpoint must give some of their weights
STREAMS: tuple[str, ...] = ("s2", "enmap")
#: the report's four lists, in the order they are counted and printed
KINDS: tuple[str, ...] = ("loaded", "reinitialised", "left_out", "missing")
_WORDS = {"loaded": "loaded", "reinitialised": "re-initialised", "left_out": "left out", "missing": "missing"}


class InitError(H2CropError):
    """A start checkpoint that cannot start this model (nothing fits, or its inputs are other ones)."""


@dataclass
class InitReport:
    """What loading a start checkpoint into a model did.

    Attributes:
        source: the file.
        kind: ``h2crop`` (an h2crop checkpoint into the whole model) or ``agrifm`` (AgriFM weights into the
            S2 encoder; its names are the model's, ``s2.encoder.*``).
        loaded: the model's tensors that took the checkpoint's (same name, same shape).
        reinitialised: the model's tensors whose shape differs from the checkpoint's (e.g. heads for another
            taxonomy): they keep their fresh initialisation.
        left_out: the checkpoint's tensors with no counterpart in the model (e.g. a stream it does not have).
        missing: the model's tensors the checkpoint has nothing for (fresh); for ``agrifm``, those of the S2
            encoder only.
        shapes: for each re-initialised tensor, [the checkpoint's shape, the model's].
    """

    source: str
    kind: str = "h2crop"
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shapes: dict[str, list[list[int]]] = field(default_factory=dict)

    @classmethod
    def from_agrifm(cls, report: LoadReport, source: str | Path) -> InitReport:
        """The AgriFM import's report in the model's names (its file-only entries are left out)."""
        inside = lambda names: [f"s2.encoder.{name}" for name in names]  # noqa: E731
        return cls(
            str(source),
            "agrifm",
            loaded=inside(report.loaded),
            left_out=sorted(report.unexpected + report.ignored),
            missing=inside(report.missing),
        )

    def counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in KINDS}

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts by top-level module (``s2``, ``enmap``, ``fusion``, ``pixel``, ``heads``; left-out names by
        the checkpoint's first name part), each module's non-zero counts in :data:`KINDS` order."""
        modules: dict[str, dict[str, int]] = {}
        for kind in KINDS:
            for name in getattr(self, kind):
                counts = modules.setdefault(name.split(".")[0], {})
                counts[kind] = counts.get(kind, 0) + 1
        return {module: {k: counts[k] for k in KINDS if k in counts} for module, counts in modules.items()}

    def lines(self) -> list[str]:
        """The report as console lines: the totals, then one line per module."""
        into = "the S2 encoder" if self.kind == "agrifm" else "the model"
        totals = ", ".join(f"{n} {_WORDS[k]}" for k, n in self.counts().items())
        lines = [f"start weights: {self.source} into {into}: {totals} (tensors)"]
        for module, counts in self.summary().items():
            lines.append(f"  {module:<8} " + ", ".join(f"{n} {_WORDS[k]}" for k, n in counts.items()))
        if self.reinitialised:
            first = self.reinitialised[0]
            then, now = self.shapes.get(first, [[], []])
            more = f" and {len(self.reinitialised) - 1} more" if len(self.reinitialised) > 1 else ""
            lines.append(f"  re-initialised (shape differs): {first} {tuple(then)} -> {tuple(now)}{more}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts(), "summary": self.summary()}

    def params(self) -> dict[str, Any]:
        """The counts as MLflow params: ``kind``, ``source``, the totals and ``<module>.<kind>``."""
        by_module = {f"{m}.{k}": n for m, counts in self.summary().items() for k, n in counts.items()}
        return {"kind": self.kind, "source": self.source, **self.counts(), **by_module}


def compare_states(source: str | Path, theirs: Mapping[str, Tensor], ours: Mapping[str, Tensor]) -> InitReport:
    """Which of ``theirs`` (a checkpoint's tensors) fit ``ours`` (a model's state dict) by name and shape;
    shapes only, so ``ours`` may live on the meta device."""
    report = InitReport(str(source))
    for name, tensor in theirs.items():
        if name not in ours:
            report.left_out.append(name)
        elif tuple(tensor.shape) != tuple(ours[name].shape):
            report.reinitialised.append(name)
            report.shapes[name] = [list(tensor.shape), list(ours[name].shape)]
        else:
            report.loaded.append(name)
    report.missing = [name for name in ours if name not in theirs]
    return report


def init_from_checkpoint(model: nn.Module, source: str | Path, payload: Mapping[str, Any] | None = None) -> InitReport:
    """Load every tensor of the h2crop checkpoint ``source`` whose name and shape match ``model``'s; the others
    keep their values (a fresh model's: its initialisation). ``payload``: the file as
    :func:`~h2crop_core.checkpoint.read_checkpoint` returned it, when already read.

    Raises:
        CheckpointError: the file is missing, unreadable or not an h2crop checkpoint.
        InitError: not one weight of the streams fits (another architecture or size, or other streams): the
            few tensors that may still fit (BatchNorm counters, head biases) are nothing to start from.
    """
    payload = read_checkpoint(source) if payload is None else payload
    name = str(source)
    theirs = payload["state_dict"]
    report = compare_states(name, theirs, model.state_dict())
    parameters = {key for key, _ in model.named_parameters()}
    if not any(key in parameters and key.split(".")[0] in STREAMS for key in report.loaded):
        preset = payload.get("model_config", {}).get("name", "?")
        raise InitError(
            f"{name}: no weight of its streams ({preset}) fits {model_name(model)} by name and shape "
            f"({len(report.loaded)} tensors would load, {len(report.reinitialised)} differ in shape): nothing to "
            "start from"
        )
    with warnings.catch_warnings():  # a meta model (the driver's dry run) warns that copying is a no-op
        warnings.simplefilter("ignore", UserWarning)
        model.load_state_dict({key: theirs[key] for key in report.loaded}, strict=False)
    return report


def stream_modules(model: nn.Module, which: str | None) -> dict[str, nn.Module]:
    """The modules ``--freeze which`` names (none for None); ``streams``: every stream ``model`` has.

    Raises:
        SettingError: an unknown name, or a stream the model does not have.
    """
    if not which:
        return {}
    if which not in FREEZE_STREAMS:
        raise SettingError(f"freeze must be one of {', '.join(FREEZE_STREAMS)}; got {which!r}")
    found = {name: getattr(model, name, None) for name in FREEZE_STREAMS[which]}
    if which != "streams" and any(module is None for module in found.values()):
        has = [name for name in STREAMS if getattr(model, name, None) is not None]
        raise SettingError(f"freeze {which}: {model_name(model)} has no {which} stream (its streams: {', '.join(has)})")
    return {name: module for name, module in found.items() if module is not None}


def model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name", type(model).__name__)


def parameter_count(modules: Mapping[str, nn.Module]) -> int:
    return sum(p.numel() for module in modules.values() for p in module.parameters())
