"""The training recipe as named steps: state, one optimizer step, a train epoch, validation, the epoch report.

Nothing here touches Ray: the Ray Train worker loop (:mod:`pipelines.training.worker`) calls these, and so do the
throughput benchmark and a sweep's trials, so the step is written once. ``torch.distributed`` is used only
when a process group is up (several workers).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from h2crop_core.data.augment import batch_cutmix, random_flip_rotate
from h2crop_core.data.spectral import SpectralJitter
from h2crop_core.metrics import HierarchicalConfusion
from h2crop_core.models.heads import decode_argmax, decode_consistent
from h2crop_core.models.loss import model_loss
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import ModelConfig
from h2crop_core.recipe import WarmupCosine, budget_steps, capped_warmup
from h2crop_core.report import build_metrics, metric_values
from h2crop_core.taxonomy import Taxonomy
from pipelines.settings import TrainSettings
from pipelines.training.finetune import Freeze

#: the validation metric that ranks checkpoints and epochs
SCORE = "val_mf1"


def predict(model: nn.Module, batch: dict, decode: str = "argmax", paths=None) -> torch.Tensor:
    """(B, L, H, W) uint8 class ids: per-level argmax, or (``consistent``) the most probable taxonomy path
    (``paths``: the taxonomy's), the decode ``evaluate`` and ``map`` use by default."""
    logits = model(**model.inputs(batch))
    ids = decode_consistent(logits, paths) if decode == "consistent" else decode_argmax(logits)
    return ids.to(torch.uint8)


def world_size() -> int:
    return (
        torch.distributed.get_world_size()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else 1
    )


# ------------------------------------------------------------------------------------------- the state
@dataclass
class TrainState:
    """What a run carries from epoch to epoch (and what a checkpoint restores)."""

    model: nn.Module  #: possibly wrapped (DDP); ``core`` is the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0  #: epochs finished
    best_score: float = -math.inf
    best_epoch: int = 0  #: the epoch (1-based) of ``best_score``: early stopping counts from it
    spent_s: float = 0.0  #: train + validation seconds used so far (the time budget)
    last_epoch_s: float = 0.0
    mlflow_run_id: str | None = None
    fitted_epochs: int = 0  #: epochs the schedule was fitted to a time budget after epoch 1 (0: not fitted)
    freeze: Freeze = field(default_factory=Freeze)  #: the --freeze modules (from the settings, not restored)

    @property
    def core(self) -> DualStreamModel:
        return getattr(self.model, "module", self.model)

    def state_dict(self) -> dict:
        """Everything but the weights (they go in the model checkpoint)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch - 1,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "mlflow_run_id": self.mlflow_run_id,
            "spent_s": self.spent_s,
            "last_epoch_s": self.last_epoch_s,
            "fitted_epochs": self.fitted_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best_score = state["epoch"] + 1, state["best_score"]
        self.best_epoch = int(state.get("best_epoch", self.epoch))
        self.mlflow_run_id, self.spent_s = state.get("mlflow_run_id"), float(state.get("spent_s", 0.0))
        self.last_epoch_s = float(state.get("last_epoch_s", 0.0))  # the budget check right after a restart
        self.fitted_epochs = int(state.get("fitted_epochs", 0))


def steps_per_epoch(n_train: int, world: int, settings: TrainSettings) -> int:
    return math.ceil(n_train / (world * settings.batch_size * settings.grad_accum))


def make_state(
    config: ModelConfig, settings: TrainSettings, n_train: int, world: int, device: torch.device | str
) -> TrainState:
    """Fresh weights (the same on every rank: seeded), AdamW and the warm-up + cosine schedule; the --freeze
    modules (frozen for the whole run: their parameters stop requiring gradients, so build DDP after this)."""
    torch.manual_seed(settings.seed)
    model = DualStreamModel(config).to(device)  # before the optimizer: restored moments land on the same device
    freeze = Freeze.of(model, settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    # steps: resolved by the recipe (schedule.py); a direct caller gets every step of its epochs
    total_steps = max(1, settings.steps or steps_per_epoch(n_train, world, settings) * settings.epochs)
    warmup = capped_warmup(settings.warmup_iters, total_steps)
    schedule = WarmupCosine(total_steps, warmup, settings.warmup_start, settings.min_lr / settings.lr)
    return TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), freeze=freeze)


def fit_to_budget(state: TrainState, settings: TrainSettings, device) -> str:
    """After the first epoch of a run with a time budget: shorten the cosine to the epochs that fit in the
    budget at that epoch's pace (rank 0's clock, broadcast), so the learning rate reaches its end within the
    budget instead of the run being cut off near its peak. Returns the console line ("" when unchanged)."""
    if not settings.time_budget_s or state.epoch != 1 or state.fitted_epochs:
        return ""
    seconds = torch.tensor([state.last_epoch_s], dtype=torch.float64, device=device)
    if world_size() > 1:
        torch.distributed.broadcast(seconds, src=0)
    schedule: WarmupCosine = state.scheduler.lr_lambdas[0]
    per_epoch = max(1, state.scheduler.last_epoch)  # the optimizer steps the first epoch took
    before = schedule.total
    epochs, total = budget_steps(settings.time_budget_s, float(seconds), per_epoch, settings.epochs, before)
    if total == before:
        return ""
    for fitted in state.scheduler.lr_lambdas:
        fitted.total, fitted.warmup = total, min(fitted.warmup, capped_warmup(fitted.warmup, total))
    state.fitted_epochs = epochs
    return (
        f"time budget: epoch 1 took {float(seconds):.0f} s, so {epochs} epoch{'s' if epochs > 1 else ''} fit in "
        f"{settings.time_budget_minutes:g} min: the cosine now ends at step {total} (was {before})"
    )


# ------------------------------------------------------------------------------------------- the steps
def augment(
    batch: dict, generator: torch.Generator, settings: TrainSettings, factor: int, jitter: SpectralJitter | None = None
) -> dict:
    """Flips/rotations and batch CutMix, identical on every modality, the labels and the priors; then the
    spectral ``jitter`` (:mod:`h2crop_core.data.spectral`), if any."""
    if settings.flip_rotate:
        batch = random_flip_rotate(batch, generator)
    if settings.cutmix_p > 0:
        batch = batch_cutmix(batch, generator, p=settings.cutmix_p, factor=factor)
    return jitter(batch, generator) if jitter is not None else batch


def optimizer_step(state: TrainState) -> None:
    state.freeze.drop_grads(state.epoch)  # frozen for now: no gradient, so AdamW (weight decay too) skips them
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()


def batch_weights(batch: dict, weights: Mapping[str, list[float]] | None) -> torch.Tensor | None:
    """(B, 4) per-level loss weights of a batch's samples by name (:func:`~h2crop_core.data.sampling.draw_weights`);
    None without weights. A CutMix box takes its host sample's weight (the box is at most the tile)."""
    if weights is None:
        return None
    rows = [weights[name] for name in batch["name"]]  # every name of the plan has its weights
    return torch.tensor(rows, dtype=torch.float32, device=batch["label"].device)


def train_step(
    state: TrainState,
    batch: dict,
    levels: tuple[int, ...],
    *,
    step: int = 1,
    grad_accum: int = 1,
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Forward, the per-level loss (``weights``: per sample name), backward; the optimizer steps every
    ``grad_accum``-th call. Returns the (detached) loss of the batch."""
    outputs = state.model(**state.core.inputs(batch))
    pixel_loss = (
        state.core.config.pixel_loss if isinstance(outputs, tuple) else 0.0
    )  # a pair: the pixel branch's logits too
    loss = model_loss(outputs, batch["label"], levels, pixel_loss, batch_weights(batch, weights))
    (loss / grad_accum).backward()
    if step % grad_accum == 0:
        optimizer_step(state)
    return loss.detach()


@dataclass
class EpochTotals:
    loss_sum: float = 0.0
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0


def train_epoch(
    state: TrainState,
    batches: Iterable[dict],
    settings: TrainSettings,
    levels: tuple[int, ...],
    *,
    factor: int,
    generator: torch.Generator,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    started: float | None = None,
    weights: Mapping[str, float] | None = None,
    jitter: SpectralJitter | None = None,
) -> EpochTotals:
    """One pass over this rank's batches. Shards may differ by a few samples: ``Join`` lets ranks that run
    out shadow the others' collectives, then every rank takes the optimizer state of the one that stepped
    most, so replicas stay identical. ``on_step(samples, loss)`` sees each step (the loss stays a tensor:
    reading it is the caller's choice); ``started`` is when the epoch's reading began (default: now);
    ``weights``: the plan's per-sample loss weights (:func:`~h2crop_core.data.sampling.draw_weights`);
    ``jitter``: the spectral augmentation (:func:`~pipelines.training.context.jitter_for`)."""
    from torch.distributed.algorithms.join import Join

    state.model.train()
    state.freeze.hold(state.epoch)  # frozen modules in eval mode: their BatchNorm statistics stay
    started, totals = started or time.perf_counter(), EpochTotals()
    device = next(state.core.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on the device: no sync per step
    world = world_size()
    with Join([state.model]) if world > 1 else contextlib.nullcontext():
        for totals.steps, batch in enumerate(batches, start=1):
            loss = train_step(
                state,
                augment(batch, generator, settings, factor, jitter),
                levels,
                step=totals.steps,
                grad_accum=settings.grad_accum,
                weights=weights,
            )
            size = len(batch["name"])
            loss_sum += loss.double() * size
            totals.samples += size
            if on_step is not None:
                on_step(size, loss)
        if totals.steps % settings.grad_accum:  # flush a partial accumulation at the end of the epoch
            optimizer_step(state)
    if world > 1:
        align_optimizer_state(state.optimizer, state.scheduler, totals.steps, device)  # by batches, not steps
    totals.loss_sum, totals.seconds = float(loss_sum), time.perf_counter() - started
    return totals


def validate(
    model: DualStreamModel,
    batches: Iterable[dict],
    taxonomy: Taxonomy,
    levels: tuple[int, ...],
    device: torch.device | str,
    decode: str = "argmax",
) -> HierarchicalConfusion:
    """Confusion matrices of the (unwrapped) model over this rank's batches, summed across ranks, decoded as
    ``decode`` (resolved: ``argmax`` or ``consistent``). No DDP collectives in the forward pass, so uneven
    shards cannot hang."""
    model.eval()
    confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy, device=device, levels=levels)
    paths = torch.as_tensor(taxonomy.paths, device=device) if decode == "consistent" else None
    with torch.no_grad():
        for batch in batches:
            confusion.update(predict(model, batch, decode, paths), batch["label"], batch["prior"])
    if world_size() > 1:
        confusion.all_reduce()
    return confusion


def epoch_report(
    state: TrainState,
    totals: EpochTotals,
    confusion: HierarchicalConfusion,
    epoch_seconds: float,
    device,
    decode: str = "argmax",
) -> tuple[dict, dict]:
    """The epoch's metrics (summed over ranks) as reported to Train and MLflow, and the full validation
    metrics; updates ``state.best_score``."""
    summed = torch.tensor([totals.loss_sum, float(totals.samples)], dtype=torch.float64, device=device)
    if world_size() > 1:
        torch.distributed.all_reduce(summed)
    metrics = build_metrics(confusion, "val", extra={"epoch": state.epoch + 1, "decode": decode})
    report = {
        "epoch": state.epoch + 1,
        "train_loss": float(summed[0] / max(summed[1], 1)),
        "train_samples": int(summed[1]),
        "val_samples": confusion.samples,
        "lr": state.scheduler.get_last_lr()[0],
        "schedule_steps": state.scheduler.lr_lambdas[0].total,  # changes once if fitted to a time budget
        "epoch_seconds": epoch_seconds,
        "train_samples_per_s": float(summed[1]) / max(totals.seconds, 1e-9),
        **metric_values(metrics, "val"),  # SCORE (val_mf1) among them
        "mlflow_run_id": state.mlflow_run_id or "",
    }
    score = report[SCORE] if report[SCORE] == report[SCORE] else -math.inf  # NaN never wins
    if score > state.best_score:
        state.best_score, state.best_epoch = score, state.epoch + 1
    report["best_val_mf1"] = state.best_score
    return report, metrics


def summary_line(report: dict, metrics: dict, epochs: int) -> str:
    per_level = " ".join(f"{values['mf1']:.3f}" for values in metrics["levels"].values())
    return (
        f"epoch {report['epoch']}/{epochs}: train loss {report['train_loss']:.4f}, val mF1 {report[SCORE]:.4f} "
        f"(per level {per_level}), {report['epoch_seconds']:.1f} s"
    )


def align_optimizer_state(optimizer: torch.optim.Optimizer, scheduler, batches: int, device) -> None:
    """After uneven shards, give every rank the optimizer and LR state of the rank that ran the most batches.

    Under ``Join`` the ranks that ran out of batches skip the others' last optimizer steps, or (with gradient
    accumulation) flush a shorter accumulation at the end: their step counts can be equal while their Adam
    moments differ. DDP's join hook broadcasts the parameters of the last rank to join, the one with the most
    batches, but not the optimizer moments, step counts or learning-rate schedule: those are sent from the
    same rank whenever the batch counts differ (the state is as large as the model x2).
    """
    import torch.distributed as dist

    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([batches], dtype=torch.int64, device=device))
    counts = [int(c) for c in counts]
    if len(set(counts)) == 1:
        return
    source = max(range(len(counts)), key=lambda r: (counts[r], r))
    payload = [optimizer.state_dict(), scheduler.state_dict()] if dist.get_rank() == source else [None, None]
    dist.broadcast_object_list(payload, src=source)
    if dist.get_rank() != source:
        optimizer.load_state_dict(payload[0])
        scheduler.load_state_dict(payload[1])


def should_stop(settings: TrainSettings, state: TrainState, device) -> tuple[bool, str]:
    """Whether the run ends before the next epoch, and why (empty when it simply ran its epochs).

    With a time budget, stop when it is used up or the next epoch (as long as the last one) would overrun
    it. Rank 0's clock decides, broadcast so that every rank stops together.
    """
    if state.fitted_epochs and state.epoch >= state.fitted_epochs:
        return True, f"time budget: the schedule fitted to it ended after epoch {state.epoch}"
    if state.epoch >= settings.epochs:
        return True, ""
    if (
        settings.patience and state.epoch - state.best_epoch >= settings.patience
    ):  # the same on every rank: no broadcast
        return True, (
            f"early stopping: no better val mF1 in {settings.patience} epochs since epoch {state.best_epoch} "
            f"({state.best_score:.4f}); keeping that epoch's checkpoint"
        )
    budget = settings.time_budget_s
    if not budget:
        return False, ""
    over = state.spent_s >= budget or (state.last_epoch_s > 0 and state.spent_s + state.last_epoch_s > budget)
    stop = torch.tensor([int(over)], dtype=torch.int64, device=device)
    if world_size() > 1:
        torch.distributed.broadcast(stop, src=0)
    if not stop.item():
        return False, ""
    return (
        True,
        f"time budget: {state.spent_s:.0f} of {budget:.0f} s used after epoch {state.epoch}, another epoch would overrun: stopping",
    )
