"""A run's start: weights from ``--init`` (an h2crop checkpoint) or ``--pretrained-s2`` (AgriFM), and
``--freeze``. No Ray here.

* On the driver, before Ray Train starts, :func:`plan_start` reads the file, refuses a checkpoint whose input
  contract differs from the data's or of which no tensor fits, and works out the report on a meta-device model
  (shapes only): what the workers will load, printed, written beside the run's outputs and logged to MLflow.
* On every worker, :func:`apply_start` loads the same file into the freshly built (seeded) model before DDP
  wraps it, so every rank starts from the same weights. Only for a new run: a run restored from its own
  checkpoint (a restart, a resume) keeps its weights (the restore wins).
* :class:`Freeze` keeps the ``--freeze`` modules' weights and BatchNorm statistics as they start. For the whole
  run (``--freeze-epochs 0``) their parameters stop requiring gradients before DDP is built (DDP leaves them
  out; nothing is computed for them). For the first N epochs they keep requiring gradients, since DDP only
  all-reduces the parameters that required them when it was built and they must train afterwards: their
  gradients are dropped (set to None) before each optimizer step, and AdamW skips a parameter without a
  gradient entirely (no moments, no step, no weight decay). While frozen they run in eval mode.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from h2crop_core.checkpoint import CheckpointError, read_checkpoint, read_contract
from h2crop_core.errors import SettingError
from h2crop_core.finetune import InitError, InitReport, init_from_checkpoint, parameter_count, stream_modules
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import ModelConfig
from h2crop_core.models.pretrained import WeightImportError, load_agrifm, read_state_dict
from h2crop_core.products.contract import CONTRACT_FILE, contract_for
from pipelines.settings import TrainSettings

if TYPE_CHECKING:  # the context module imports Ray (the progress queue); the steps importing this must not
    from pipelines.training.context import DatasetContext

#: the settings of a run's start, which ``h2crop tune`` passes on to every trial
START_SETTINGS: tuple[str, ...] = ("init", "pretrained_s2", "freeze", "freeze_epochs")
#: the report's file beside the run's outputs (and its MLflow artifact under ``config/``)
INIT_REPORT = "init_report.json"


@dataclass
class StartPlan:
    """What a run starts from, worked out on the driver: the report of its start weights (None: fresh) and
    the console lines that say it."""

    report: InitReport | None = None
    lines: list[str] = field(default_factory=list)


def read_start(settings: TrainSettings) -> dict | None:
    """The ``--init`` checkpoint's payload or the ``--pretrained-s2`` file's tensors (None without either),
    read once, with ``torch.load(weights_only=True)``.

    Raises:
        SettingError: one line naming the option and the file (missing, unreadable, not of its kind).
    """
    if settings.init:
        try:
            return read_checkpoint(settings.init)
        except CheckpointError as error:
            hint = " (AgriFM weights go to --pretrained-s2)" if "format tag" in str(error) else ""
            raise SettingError(f"--init {error}{hint}") from None
    if settings.pretrained_s2:
        path = settings.pretrained_s2
        try:
            return {"state_dict": read_state_dict(path)}
        except WeightImportError as error:
            raise SettingError(f"--pretrained-s2 {path}: {str(error).removeprefix(f'{path}: ')}") from None
    return None


def plan_start(
    settings: TrainSettings, config: ModelConfig, data: DatasetContext, source: dict | None = None
) -> StartPlan:
    """Check the start settings against the model and the data, and say what the run will start from.

    Args:
        source: :func:`read_start`'s result when already read (a sweep reads it once for every trial).

    Raises:
        SettingError: a stream to freeze the preset does not have, an unreadable file, a checkpoint whose input
            contract differs from the data's, or one of which no tensor fits (one line each).
    """
    from h2crop_core.models.summary import build_meta

    plan = StartPlan()
    if not (settings.init or settings.pretrained_s2 or settings.freeze):
        return plan
    model = build_meta(config)
    frozen = stream_modules(model, settings.freeze)
    if settings.init or settings.pretrained_s2:
        source = read_start(settings) if source is None else source
        if settings.init:
            check_contract(settings.init, source, data)
        plan.report = start_report(settings, model, source)
        plan.lines = plan.report.lines()
        heads = [name for name in plan.report.loaded if name.startswith("heads.")]
        if settings.init and heads and source.get("taxonomy_csv") != data.taxonomy.to_csv_text():
            plan.lines.append(
                f"  note: the checkpoint's taxonomy is not the data's: {len(heads)} head tensors of the same shape "
                "were loaded all the same"
            )
    if frozen:
        how = (
            f"for the first {settings.freeze_epochs} epoch(s), then trained"
            if settings.freeze_epochs
            else "for the whole run"
        )
        plan.lines.append(f"freeze: {' and '.join(frozen)} ({parameter_count(frozen):,} parameters) frozen {how}")
    return plan


def check_contract(path: str, payload: dict, data: DatasetContext) -> None:
    """Refuse a checkpoint trained on other inputs than the data's (its contract vs the data's
    ``input_contract.json``, or the contract the data's layout implies); one written before contracts passes."""
    theirs = read_contract(payload, path)
    ours = data.contract or contract_for(data.spec)
    differences = theirs.differences(ours) if theirs is not None else []
    if differences:
        where = f"{Path(data.root) / CONTRACT_FILE}" if data.contract else f"{data.root} (its layout's contract)"
        raise SettingError(
            f"--init {path}: trained on other inputs than {where} (checkpoint then vs data now): "
            f"{'; '.join(differences)}"
        )


def start_report(settings: TrainSettings, model: nn.Module, source: dict) -> InitReport:
    """Load the start weights into ``model`` (on the meta device: the report only) and report what loaded."""
    try:
        if settings.init:
            return init_from_checkpoint(model, settings.init, source)
        with warnings.catch_warnings():  # copying into a meta model is a no-op, and says so
            warnings.simplefilter("ignore", UserWarning)
            loaded = load_agrifm(model, source["state_dict"])
    except (InitError, WeightImportError) as error:
        option = "--init" if settings.init else f"--pretrained-s2 {settings.pretrained_s2}:"
        raise SettingError(f"{option} {error}") from None
    report = InitReport.from_agrifm(loaded, settings.pretrained_s2)
    if not report.loaded:
        raise SettingError(
            f"--pretrained-s2 {settings.pretrained_s2}: none of its tensors fits the S2 encoder by name "
            f"(first: {', '.join(report.left_out[:3])}); an h2crop checkpoint goes to --init"
        )
    return report


def apply_start(model: DualStreamModel, settings: TrainSettings) -> InitReport | None:
    """On a worker: load the start weights into the fresh model (None: no start weights)."""
    if not (settings.init or settings.pretrained_s2):
        return None
    return start_report(settings, model, read_start(settings))


# ------------------------------------------------------------------------------------------- freezing
@dataclass
class Freeze:
    """The frozen modules of a run and for how long (``epochs`` 0: the whole run)."""

    modules: dict[str, nn.Module] = field(default_factory=dict)
    epochs: int = 0

    @classmethod
    def of(cls, model: nn.Module, settings: TrainSettings) -> Freeze:
        """The ``--freeze`` modules of ``model``; frozen for the whole run, their parameters stop requiring
        gradients now (call before DDP wraps the model)."""
        freeze = cls(stream_modules(model, settings.freeze), settings.freeze_epochs)
        if not freeze.epochs:
            for parameter in freeze.parameters():
                parameter.requires_grad_(False)
        return freeze

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules.values() for p in module.parameters()]

    def active(self, done: int) -> bool:
        """Frozen in the epoch after ``done`` finished epochs."""
        return bool(self.modules) and (not self.epochs or done < self.epochs)

    def hold(self, done: int) -> None:
        """At the start of an epoch (after ``model.train()``): the frozen modules run in eval mode (their
        BatchNorm statistics stay, no dropout or stochastic depth)."""
        if self.active(done):
            for module in self.modules.values():
                module.eval()

    def drop_grads(self, done: int) -> None:
        """Before an optimizer step: the frozen parameters' gradients go (AdamW then leaves them untouched)."""
        if self.active(done):
            for parameter in self.parameters():
                parameter.grad = None
