"""Distributed training on Ray Train (V2): the worker loop, checkpoints, resume and the driver.

``run_training`` is what ``h2crop train`` calls. It joins the cluster named by ``RAY_ADDRESS`` (as under
``ray job submit``) or starts a local Ray, then runs a ``TorchTrainer``:

* inputs: Ray Data datasets of sample paths, split exactly once per epoch across workers (``ray_data``);
* every epoch: train with per-level cross-entropy (255 ignored, levels weighted equally), AdamW with
  linear warm-up then cosine decay, bf16 autocast (the model's ``precision``), flips/rotations and batch
  CutMix on the worker, gradient accumulation; validate with confusion matrices summed across ranks;
* rank 0 writes a self-contained checkpoint plus optimizer state and the epoch's report, and logs to
  MLflow; ``ray.train.report`` hands the checkpoint to Train, which keeps the latest and the best by
  validation mF1;
* a dead worker restarts the group from the latest checkpoint (``FailureConfig``); re-running with the
  same ``--run-name`` and storage resumes the run instead of starting over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.data.augment import batch_cutmix, random_flip_rotate
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleReader, infer_spec
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.stats import NormStats
from h2crop_core.files import write_atomic
from h2crop_core.metrics import HierarchicalConfusion
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import ModelConfig, get_preset
from h2crop_core.report import build_metrics, write_report
from h2crop_core.taxonomy import UNLABELLED, Taxonomy, load_taxonomy

MODEL_FILE = "model.ckpt"
STATE_FILE = "train_state.pt"
SCORE = "val_mf1"


@dataclass
class TrainSettings:
    """Everything a training run needs; recorded whole as MLflow params. Defaults: the benchmark recipe."""

    data: str
    preset: str
    overrides: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 4  #: per worker
    lr: float = 6e-5
    weight_decay: float = 5e-4
    warmup_iters: int = 1000
    warmup_start: float = 0.01  #: warm-up starts at this fraction of lr
    min_lr: float = 6e-6
    grad_accum: int = 1
    precision: str = "bf16"  #: autocast precision for training unless the overrides set one (fp32|bf16)
    cutmix_p: float = 0.5
    flip_rotate: bool = True
    workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    loader_workers: int = 1  #: reader processes per training worker (paths mode)
    input_mode: str = "paths"
    seed: int = 0
    run_name: str = ""
    storage: str = "ray_results"
    output: str = ""
    tracking_uri: str = ""
    experiment: str = "h2crop"
    max_failures: int = 2
    taxonomy: str = ""
    time_budget_s: float = 0.0  #: train+validation seconds not to exceed: stop before an epoch that would (0 = no limit)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------- pieces
def parse_overrides(pairs: list[str]) -> dict:
    """``["precision=bf16", "fusion=gated", "s2_depths=[2,2,2,2]"]`` -> typed ModelConfig overrides."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(f"--set {key}: not a model setting; known: {', '.join(sorted(fields))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as bf16
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def lr_factor(step: int, total: int, warmup: int, warmup_start: float, min_ratio: float) -> float:
    """Multiplier of the base lr: linear warm-up from ``warmup_start`` over ``warmup`` steps, then cosine
    decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return warmup_start + (1 - warmup_start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def hierarchical_loss(logits: list[torch.Tensor], label: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """Sum over levels of the pixel cross-entropy (label 255 ignored; a level with no labelled pixel adds 0)."""
    total = logits[0].new_zeros(())
    for level, level_logits in zip(levels, logits):
        target = label[:, level - 1].long()
        labelled = (target != UNLABELLED).sum()
        loss = F.cross_entropy(level_logits, target, ignore_index=UNLABELLED, reduction="sum")
        total = total + loss / labelled.clamp(min=1)
    return total


def predict(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """(B, L, H, W) uint8 per-level argmax."""
    logits = model(**model.inputs(batch))
    return torch.stack([level.argmax(1) for level in logits], 1).to(torch.uint8)


def model_config_for(settings: TrainSettings, taxonomy: Taxonomy, spec: SampleSpec) -> ModelConfig:
    """Preset + overrides, with class counts from the taxonomy and band counts from the data."""
    overrides = {"precision": settings.precision, **settings.overrides}
    config = get_preset(settings.preset, **overrides)
    return config.replace(num_classes=taxonomy.num_classes, s2_bands=spec.s2_bands, enmap_bands=spec.enmap_bands, enmap_upscale=spec.enmap_factor)


def reader_for(config: ModelConfig, taxonomy: Taxonomy, stats: NormStats, spec: SampleSpec) -> SampleReader:
    """Training reads the model's inputs and the labels (and priors, for the changed-area metrics)."""
    modalities = tuple(dict.fromkeys(config.input_keys + ("prior", "label")))
    return SampleReader(config.window, modalities, taxonomy=taxonomy, stats=stats, spec=spec)


# ---------------------------------------------------------------------------------------- the worker
def train_loop_per_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    from torch.distributed.algorithms.join import Join

    from pipelines import tracking
    from pipelines.ray_data import ShardReader

    _quiet_train_logs()
    settings = TrainSettings(**loop_config["settings"])
    taxonomy = Taxonomy.from_csv_text(loop_config["taxonomy_csv"])
    stats = NormStats(**{k: torch.tensor(v).double().numpy() for k, v in loop_config["stats"].items()})
    config = ModelConfig.from_dict(loop_config["model_config"])
    spec = SampleSpec(**loop_config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(settings.seed)  # identical initial weights on every rank

    model = DualStreamModel(config).to(device)  # before the optimizer: restored moments land on the same device
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(loop_config["n_train"] / (world * settings.batch_size * settings.grad_accum))
    total_steps = max(1, steps_per_epoch * settings.epochs)
    warmup = min(settings.warmup_iters, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, settings.warmup_start, settings.min_lr / settings.lr)
    )
    start_epoch, best_score, run_id = 0, -math.inf, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
            model.load_state_dict(load_checkpoint(Path(folder) / MODEL_FILE, device=device).model.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, run_id = state["epoch"] + 1, state["best_score"], state.get("mlflow_run_id")
        if rank == 0:
            print(f"[h2crop] resuming {settings.run_name} after epoch {state['epoch'] + 1}", flush=True)
    model = ray.train.torch.prepare_model(model)
    core = getattr(model, "module", model)

    if rank == 0:
        params = {"settings": settings.to_dict(), "model": config.to_dict()}
        tags = {
            "preset": settings.preset,
            "window": str(config.window),
            "modalities": ",".join(config.input_keys),
            "git_commit": loop_config["git_commit"],
            "dataset_fingerprint": loop_config["fingerprint"],
        }
        run_id = tracking.open_run(loop_config["tracking_uri"], settings.experiment, settings.run_name, params, tags, run_id=run_id)
        if start_epoch:
            tracking.log_epoch({"resumed_from_epoch": start_epoch}, step=start_epoch)

    reader = reader_for(config, taxonomy, stats, spec)
    common = dict(loader_workers=settings.loader_workers, device=device)
    train_data = ShardReader(ray.train.get_dataset_shard("train"), settings.input_mode, reader, settings.batch_size, all_paths=loop_config["train_paths"], **common)
    val_data = ShardReader(ray.train.get_dataset_shard("val"), settings.input_mode, reader, settings.batch_size, all_paths=loop_config["val_paths"], **common)
    spent = float(state["spent_s"]) if checkpoint is not None and "spent_s" in state else 0.0
    for epoch in range(start_epoch, settings.epochs):
        if settings.time_budget_s and spent >= settings.time_budget_s:
            break  # resumed after the budget was already used up (the same on every rank: restored state)
        started = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch * 101 + rank)
        more = epoch + 1 < settings.epochs and not settings.time_budget_s  # a budget may end the run early
        batches = train_data.epoch(shuffle_seed=settings.seed * 7919 + epoch * 31 + rank, prefetch_next=more)
        loss_sum, seen, step = torch.zeros((), device=device, dtype=torch.float64), 0, 0
        # Shards may differ by a few samples: Join lets ranks that run out shadow the others' collectives.
        with Join([model]) if world > 1 else contextlib.nullcontext():
            for step, batch in enumerate(batches, start=1):
                if settings.flip_rotate:
                    batch = random_flip_rotate(batch, generator)
                if settings.cutmix_p > 0:
                    batch = batch_cutmix(batch, generator, p=settings.cutmix_p, factor=spec.enmap_factor)
                loss = hierarchical_loss(model(**core.inputs(batch)), batch["label"], config.levels)
                (loss / settings.grad_accum).backward()
                if step % settings.grad_accum == 0:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                loss_sum += loss.detach().double() * len(batch["name"])
                seen += len(batch["name"])
            if step % settings.grad_accum:  # flush a partial accumulation at the end of the epoch
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        if world > 1:
            align_optimizer_state(optimizer, scheduler, math.ceil(step / settings.grad_accum), device)
        train_time = time.perf_counter() - started

        # Validation on the unwrapped model: no DDP collectives, so uneven shards cannot hang.
        core.eval()
        confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy, device=device, levels=config.levels)
        with torch.no_grad():
            for batch in val_data.epoch(prefetch_next=more):
                confusion.update(predict(core, batch), batch["label"], batch["prior"])
        totals = torch.tensor([float(loss_sum), float(seen)], dtype=torch.float64, device=device)
        if world > 1:
            torch.distributed.all_reduce(totals)
            confusion.all_reduce()
        metrics = build_metrics(confusion, "val", extra={"epoch": epoch + 1})
        report = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "train_samples": int(totals[1]),
            "val_samples": confusion.samples,
            "lr": scheduler.get_last_lr()[0],
            "epoch_seconds": time.perf_counter() - started,
            "train_samples_per_s": float(totals[1]) / max(train_time, 1e-9),
            SCORE: metrics["mean"]["mf1"],
            "val_miou": metrics["mean"]["miou"],
            "val_oa": metrics["mean"]["oa"],
            "val_consistency": metrics["consistency"],
            "mlflow_run_id": run_id or "",
        }
        for level, values in metrics["levels"].items():
            for key in ("oa", "miou", "mf1"):
                report[f"val_{level}_{key}"] = values[key]
        score = report[SCORE] if report[SCORE] == report[SCORE] else -math.inf
        best_score = max(best_score, score)
        report["best_val_mf1"] = best_score
        if rank == 0:
            per_level = " ".join(f"{values['mf1']:.3f}" for values in metrics["levels"].values())
            print(
                f"[h2crop] epoch {epoch + 1}/{settings.epochs}: train loss {report['train_loss']:.4f}, "
                f"val mF1 {report[SCORE]:.4f} (per level {per_level}), {report['epoch_seconds']:.1f} s",
                flush=True,
            )
            with tempfile.TemporaryDirectory() as folder:
                meta = {"epoch": epoch + 1, "run_name": settings.run_name, "val": {k: v for k, v in report.items() if k.startswith("val_")},
                        "dataset_fingerprint": loop_config["fingerprint"], "mlflow_run_id": run_id or ""}
                save_checkpoint(Path(folder) / MODEL_FILE, core, config, taxonomy, stats, spec=spec, meta=meta)
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                            "best_score": best_score, "mlflow_run_id": run_id, "spent_s": spent + report["epoch_seconds"]}, Path(folder) / STATE_FILE)
                write_report(metrics, confusion, Path(folder) / "report", taxonomy)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))
            # logged once the checkpoint is committed, so a restart never logs an epoch twice
            tracking.log_epoch({k: v for k, v in report.items() if k != "mlflow_run_id"}, step=epoch + 1)
        else:
            ray.train.report(report, checkpoint=None)
        spent += report["epoch_seconds"]
        # stop when the next epoch (as long as this one) would overrun the budget
        over = spent + report["epoch_seconds"] > settings.time_budget_s
        stop = torch.tensor([bool(settings.time_budget_s) and over], dtype=torch.int64, device=device)
        if world > 1:
            torch.distributed.broadcast(stop, src=0)  # rank 0's clock decides, so every rank stops together
        if stop.item():
            if rank == 0:
                print(f"[h2crop] time budget: {spent:.0f} of {settings.time_budget_s:.0f} s used after epoch {epoch + 1}, another epoch would overrun: stopping", flush=True)
            break
    if rank == 0:
        tracking.close_run()


def align_optimizer_state(optimizer, scheduler, steps: int, device) -> None:
    """After uneven shards, give every rank the optimizer and LR state of the rank that stepped most.

    Under ``Join`` the ranks that ran out of batches skip the others' last optimizer steps; DDP's join hook
    then broadcasts the parameters of the last rank to join, but not the optimizer moments, step counts or
    learning-rate schedule. Only when step counts differ is the state sent (it is as large as the model x2).
    """
    import torch.distributed as dist

    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([steps], dtype=torch.int64, device=device))
    counts = [int(c) for c in counts]
    if len(set(counts)) == 1:
        return
    source = max(range(len(counts)), key=lambda r: (counts[r], r))
    payload = [optimizer.state_dict(), scheduler.state_dict()] if dist.get_rank() == source else [None, None]
    dist.broadcast_object_list(payload, src=source)
    if dist.get_rank() != source:
        optimizer.load_state_dict(payload[0])
        scheduler.load_state_dict(payload[1])


def _quiet_train_logs() -> None:
    """Ray Train logs every report and checkpoint at INFO; our own epoch line says the same, once."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.endswith(("execution/context.py", "execution.storage", "execution/storage.py")):
            logging.getLogger(name).setLevel(logging.WARNING)
    for module in ("ray.train.v2._internal.execution.context", "ray.train.v2._internal.execution.storage"):
        try:
            imported = __import__(module, fromlist=["logger"])
            imported.logger.setLevel(logging.WARNING)
        except (ImportError, AttributeError):
            pass


# ---------------------------------------------------------------------------------------- the driver
@dataclass
class TrainOutcome:
    run_name: str
    output: Path
    best_checkpoint: Path
    best_metrics: dict
    tracking_uri: str
    mlflow_run_id: str
    epochs_done: int


def connect_ray(num_cpus: int | None = None) -> None:
    """Join ``RAY_ADDRESS`` if set (``ray job submit``); otherwise start a local Ray sized to the machine.

    On small machines the local Ray gets more logical CPUs than cores: training workers and Ray Data's
    read tasks must be schedulable together (with 2 workers on 2 cores, reads would starve).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # Keep the dashboard: Train's placement-group cleaner queries the State API through it (without it
        # the cleaner cannot tell a dead controller from a live one and logs a warning every few seconds).
        ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1))


def quiet_data_context() -> None:
    """Ray Data's per-split progress bars and plan printouts are noise next to the epoch lines."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


@dataclass
class PreparedRun:
    """Everything resolved on the driver before Ray Train starts."""

    settings: TrainSettings
    config: ModelConfig
    taxonomy: Taxonomy
    stats: NormStats
    spec: SampleSpec
    train_paths: list[Path]
    val_paths: list[Path]
    tracking_uri: str
    loop_config: dict


def prepare_run(settings: TrainSettings) -> PreparedRun:
    """Resolve data, taxonomy, statistics (computed if missing), model config and the workers' config."""
    from pipelines import tracking

    root = Path(settings.data).resolve()
    index = DatasetIndex(root)
    taxonomy = load_taxonomy(root, settings.taxonomy or None)
    train_paths, val_paths = index.split_paths("train"), index.split_paths("val")
    spec = infer_spec(train_paths[0])
    stats = ensure_norm_stats(index, spec)
    config = model_config_for(settings, taxonomy, spec)
    if not settings.run_name:
        settings.run_name = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = tracking.resolve_tracking_uri(settings.tracking_uri or None)
    loop_config = {
        "settings": settings.to_dict(),
        "model_config": config.to_dict(),
        "taxonomy_csv": taxonomy.to_csv_text(),
        "stats": {k: getattr(stats, k).tolist() for k in ("s2_mean", "s2_std", "enmap_mean", "enmap_std")},
        "spec": dataclasses.asdict(spec),
        "n_train": len(train_paths),
        "train_paths": [str(p) for p in train_paths],
        "val_paths": [str(p) for p in val_paths],
        "tracking_uri": tracking_uri,
        "git_commit": tracking.git_commit(Path(__file__).parent),
        "fingerprint": index.fingerprint(),
    }
    return PreparedRun(settings, config, taxonomy, stats, spec, train_paths, val_paths, tracking_uri, loop_config)


def datasets_for(run: PreparedRun) -> dict:
    """Ray Data inputs: path rows (read on the workers) or arrays read in Ray Data tasks."""
    from pipelines.ray_data import array_dataset, path_dataset

    if run.settings.input_mode == "arrays":
        reader = reader_for(run.config, run.taxonomy, run.stats, run.spec)
        return {"train": array_dataset(run.train_paths, reader, shuffle=True), "val": array_dataset(run.val_paths, reader)}
    return {"train": path_dataset(run.train_paths, shuffle=True), "val": path_dataset(run.val_paths)}


def resolve_storage(storage: str) -> str:
    """Local paths become absolute (Train needs that); URIs such as ``s3://bucket/runs`` stay as they are."""
    return storage if "://" in storage else str(Path(storage).resolve())


def make_trainer(run: PreparedRun, storage: str | Path, callbacks: list | None = None):
    """The ``TorchTrainer`` of a prepared run."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.ray_data import ExactlyOnceDataConfig

    settings = run.settings
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=run.loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers, use_gpu=settings.use_gpu, resources_per_worker={"CPU": settings.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=settings.run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=SCORE, checkpoint_score_order="max"),
            callbacks=callbacks,
        ),
        datasets=datasets_for(run),
        dataset_config=ExactlyOnceDataConfig(),
    )


def run_training(settings: TrainSettings) -> TrainOutcome:
    """Run (or resume) a training; copy the best checkpoint and its report to ``settings.output``."""
    from pipelines import tracking

    run = prepare_run(settings)
    storage = resolve_storage(settings.storage)
    output = Path(settings.output or Path("runs") / settings.run_name).resolve()
    tracking_uri = run.tracking_uri
    connect_ray()
    quiet_data_context()
    trainer = make_trainer(run, storage)
    result = trainer.fit()
    if result.error:
        raise result.error
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda pair: _score(pair[1]))
    output.mkdir(parents=True, exist_ok=True)
    with best_checkpoint.as_directory() as folder:
        # the report first, the checkpoint last: a best.ckpt is only ever beside its own report
        (output / "best.ckpt").unlink(missing_ok=True)
        for item in (Path(folder) / "report").iterdir():
            shutil.copy2(item, output / item.name)
        with open(Path(folder) / MODEL_FILE, "rb") as source:
            write_atomic(output / "best.ckpt", lambda file: shutil.copyfileobj(source, file))
    (output / "train_settings.json").write_text(json.dumps({"settings": settings.to_dict(), "model": run.config.to_dict()}, indent=1))
    run_id = str(best_metrics.get("mlflow_run_id") or result.metrics.get("mlflow_run_id", ""))
    if run_id:
        tracking.log_artifacts(tracking_uri, run_id, [output / "best.ckpt"], "best")
        report_files = sorted(p for p in output.iterdir() if p.suffix in (".json", ".csv", ".png") and p.name != "train_settings.json")
        tracking.log_artifacts(tracking_uri, run_id, report_files, "best_report")
        tracking.log_artifacts(tracking_uri, run_id, [output / "train_settings.json"], "config")
    return TrainOutcome(settings.run_name, output, output / "best.ckpt", best_metrics, tracking_uri, run_id, int(result.metrics.get("epoch", 0)))


def _score(metrics: dict) -> float:
    value = metrics.get(SCORE, -math.inf)
    return value if value == value else -math.inf


def ensure_norm_stats(index: DatasetIndex, spec: SampleSpec) -> NormStats:
    """The root's ``norm_stats.json``, computed over the training split first if it is missing."""
    if not index.norm_stats_path.is_file():
        from h2crop_core.data.stats import compute_norm_stats

        print(f"[h2crop] {index.norm_stats_path} not found: computing it over the training split", flush=True)
        paths = index.split_paths("train")
        compute_norm_stats(paths, workers=min(4, os.cpu_count() or 1), spec=spec, meta={"split": "train"}).to_json(index.norm_stats_path)
    return NormStats.from_json(index.norm_stats_path)
