"""Distributed training on Ray Train (V2): the worker loop, checkpoints, resume and the driver.

``run_training`` is what ``h2crop train`` calls. It joins the cluster named by ``RAY_ADDRESS`` (as under
``ray job submit``) or starts a local Ray, then runs a ``TorchTrainer`` whose worker loop reads top to
bottom as the named steps of :mod:`pipelines.training.steps` plus the Ray parts below:

* inputs: Ray Data datasets of sample paths, split exactly once per epoch across workers (``ray_data``);
* every epoch: train (per-level cross-entropy, AdamW, warm-up + cosine, bf16 autocast, augmentations,
  gradient accumulation), validate with confusion matrices summed across ranks, report;
* rank 0 writes a self-contained checkpoint plus optimizer state and the epoch's report, logs to MLflow and
  sends progress to the driver's console; ``ray.train.report`` hands the checkpoint to Train, which keeps
  the latest and the best by validation mF1;
* a dead worker restarts the group from the latest checkpoint (``FailureConfig``); re-running with the
  same ``--run-name`` and storage resumes the run instead of starting over.

What depends only on the dataset (taxonomy, sample layout, statistics, split paths) is a
:class:`DatasetContext`, prepared once and reusable by every run of a sweep.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import SampleReader, infer_dataset_spec
from h2crop_core.data.sampling import draw_weights
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.stats import ensure_norm_stats
from h2crop_core.errors import SettingError
from h2crop_core.files import write_atomic, write_text_atomic
from h2crop_core.models.presets import ModelConfig, get_preset
from h2crop_core.report import write_report
from h2crop_core.runlock import RunLock
from h2crop_core.taxonomy import Taxonomy, load_taxonomy
from pipelines.runtime.progress import ProgressSender
from pipelines.settings import TrainSettings
from pipelines.training.schedule import Schedule, resolve_schedule
from pipelines.training.steps import (
    SCORE,
    TrainState,
    epoch_report,
    make_state,
    should_stop,
    summary_line,
    train_epoch,
    validate,
)

MODEL_FILE = "model.ckpt"
STATE_FILE = "train_state.pt"


# ----------------------------------------------------------------------------------- what a run reads
@dataclass(frozen=True)
class DatasetContext:
    """Everything about the dataset a training needs, resolved once on the driver."""

    root: str
    taxonomy: Taxonomy
    spec: SampleSpec
    stats: NormStats
    train_paths: tuple[str, ...]
    val_paths: tuple[str, ...]
    fingerprint: str


def prepare_dataset(root: str | Path, taxonomy: str | Path | None = None, *, progress: bool = True) -> DatasetContext:
    """Splits, taxonomy, sample layout and normalisation statistics (computed over the training split if
    the root has none)."""
    index = DatasetIndex(Path(root).resolve())
    loaded_taxonomy = load_taxonomy(index.root, taxonomy or None)  # before the statistics: a typo fails fast
    train_paths, val_paths = index.split_paths("train"), index.split_paths("val")
    spec = infer_dataset_spec(train_paths)
    stats = ensure_norm_stats(index, spec, progress=progress)
    return DatasetContext(
        str(index.root),
        loaded_taxonomy,
        spec,
        stats,
        tuple(map(str, train_paths)),
        tuple(map(str, val_paths)),
        index.fingerprint(),
    )


@dataclass(frozen=True)
class LoopConfig:
    """The worker loop's whole configuration (typed, pickled to every worker)."""

    settings: TrainSettings
    model: ModelConfig
    data: DatasetContext
    tracking_uri: str
    git_commit: str
    progress: ProgressSender = field(default_factory=ProgressSender)
    tags: dict = field(default_factory=dict)  #: extra MLflow tags (a sweep's trial: its parent run, its config)


def model_config_for(settings: TrainSettings, taxonomy: Taxonomy, spec: SampleSpec) -> ModelConfig:
    """Preset + overrides, with class counts from the taxonomy and band counts from the data; the model is
    built once on the meta device, so overrides it cannot be built with fail here, not in every worker."""
    from h2crop_core.models.summary import build_meta

    overrides = {"precision": settings.precision, **settings.overrides}
    config = get_preset(settings.preset, **overrides)
    config = config.replace(
        num_classes=taxonomy.num_classes,
        s2_bands=spec.s2_bands,
        enmap_bands=spec.enmap_bands,
        enmap_upscale=spec.enmap_factor,
    )
    try:
        build_meta(config)
    except SettingError:
        raise
    except (
        ValueError,
        TypeError,
        RuntimeError,
        IndexError,
        AssertionError,
    ) as error:  # a shape or count that does not fit
        given = " ".join(f"--set {k}={v}" for k, v in settings.overrides.items()) or "no --set"
        raise SettingError(f"preset {settings.preset} with {given} cannot be built for this data: {error}") from error
    return config


def reader_for(config: ModelConfig, data: DatasetContext) -> SampleReader:
    """Training reads the model's inputs and the labels (and priors, for the changed-area metrics)."""
    modalities = tuple(dict.fromkeys(config.input_keys + ("prior", "label")))
    return SampleReader(config.window, modalities, taxonomy=data.taxonomy, stats=data.stats, spec=data.spec)


# ------------------------------------------------------------------------------ the worker's Ray steps
def restore(loop: LoopConfig, device: torch.device, world: int) -> TrainState:
    """A fresh state, or the one of Train's latest checkpoint (after a restart or on a resumed run)."""
    import ray.train
    import ray.train.torch

    state = make_state(loop.model, loop.settings, len(loop.data.train_paths), world, device)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
            state.model.load_state_dict(load_checkpoint(Path(folder) / MODEL_FILE, device=device).model.state_dict())
        state.load_state_dict(saved)
        loop.progress.message(f"resuming {loop.settings.run_name} after epoch {state.epoch}")
    state.model = ray.train.torch.prepare_model(state.model)
    return state


def announce_placement(progress: ProgressSender, world: int) -> None:
    """Say where the workers run (one line from rank 0): on a cluster, which nodes got them."""
    import ray
    import torch.distributed as dist

    address = ray.util.get_node_ip_address()
    addresses = [address] * world
    if world > 1 and dist.is_initialized():
        dist.all_gather_object(addresses, address)
    counts = {node: addresses.count(node) for node in dict.fromkeys(addresses)}
    nodes = ", ".join(f"{node} ({count})" for node, count in counts.items())
    progress.message(f"{world} training worker(s) on {len(counts)} node(s): {nodes}")


def open_tracking(loop: LoopConfig, state: TrainState) -> None:
    """Rank 0: open (or continue, on resume) the run's MLflow run."""
    from pipelines.runtime import tracking

    params = {"settings": loop.settings.to_dict(), "model": loop.model.to_dict()}
    tags = {
        "preset": loop.settings.preset,
        "window": str(loop.model.window),
        "modalities": ",".join(loop.model.input_keys),
        "git_commit": loop.git_commit,
        "dataset_fingerprint": loop.data.fingerprint,
        tracking.KIND_TAG: "train",
        **loop.tags,
    }
    state.mlflow_run_id = tracking.open_run(
        loop.tracking_uri, loop.settings.experiment, loop.settings.run_name, params, tags, run_id=state.mlflow_run_id
    )
    if state.epoch:  # restored from a checkpoint
        tracking.log_epoch({"resumed_from_epoch": state.epoch}, step=state.epoch)


def shard_readers(loop: LoopConfig, device: torch.device):
    """This worker's train and val shards as batches on ``device``."""
    import ray.train

    from pipelines.training.ray_data import ShardReader

    reader, settings = reader_for(loop.model, loop.data), loop.settings
    common = dict(loader_workers=settings.loader_workers, device=device)
    return tuple(
        ShardReader(
            ray.train.get_dataset_shard(split),
            settings.input_mode,
            reader,
            settings.batch_size,
            all_paths=paths,
            **common,
        )
        for split, paths in (("train", loop.data.train_paths), ("val", loop.data.val_paths))
    )


def save_epoch(loop: LoopConfig, state: TrainState, report: dict, metrics: dict, confusion, rank: int) -> None:
    """Report the epoch to Train (a barrier on every rank); rank 0 attaches the checkpoint, then logs to
    MLflow once the checkpoint is committed, so a restart never logs an epoch twice."""
    import ray.train

    from pipelines.runtime import tracking

    if rank != 0:
        ray.train.report(report, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        meta = {
            "epoch": report["epoch"],
            "run_name": loop.settings.run_name,
            "val": {k: v for k, v in report.items() if k.startswith("val_")},
            "dataset_fingerprint": loop.data.fingerprint,
            "mlflow_run_id": state.mlflow_run_id or "",
        }
        save_checkpoint(
            Path(folder) / MODEL_FILE,
            state.core,
            loop.model,
            loop.data.taxonomy,
            loop.data.stats,
            spec=loop.data.spec,
            meta=meta,
        )
        torch.save(state.state_dict(), Path(folder) / STATE_FILE)
        write_report(metrics, confusion, Path(folder) / "report", loop.data.taxonomy)
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))
    tracking.log_epoch({k: v for k, v in report.items() if k != "mlflow_run_id"}, step=report["epoch"])


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: restore, then train / validate / report each epoch until done."""
    import ray.train
    import ray.train.torch

    from pipelines.runtime import tracking

    loop: LoopConfig = config["loop"]
    settings, levels, factor = loop.settings, loop.model.levels, loop.data.spec.enmap_factor
    context = ray.train.get_context()
    rank, world, device = context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()
    progress = loop.progress if rank == 0 else ProgressSender()
    announce_placement(progress, world)
    state = restore(replace(loop, progress=progress), device, world)
    if rank == 0:
        open_tracking(loop, state)
    (train_data, val_data), weights = (
        shard_readers(loop, device),
        draw_weights(loop.data.train_paths),
    )  # weights: None for the benchmark's plan
    try:
        stop, why = should_stop(settings, state, device)
        while not stop:
            started, more = time.perf_counter(), state.epoch + 1 < settings.epochs  # prefetch unless surely the last
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + state.epoch * 101 + rank)
            batches = train_data.epoch(shuffle_seed=settings.seed * 7919 + state.epoch * 31 + rank, prefetch_next=more)
            progress.epoch_start(state.epoch + 1, settings.epochs, batches.batches)
            totals = train_epoch(
                state,
                batches,
                settings,
                levels,
                factor=factor,
                generator=generator,
                started=started,
                on_step=progress.step if rank == 0 else None,
                weights=weights,
            )
            confusion = validate(state.core, val_data.epoch(prefetch_next=more), loop.data.taxonomy, levels, device)
            report, metrics = epoch_report(state, totals, confusion, time.perf_counter() - started, device)
            state.epoch, state.last_epoch_s = state.epoch + 1, report["epoch_seconds"]
            state.spent_s += state.last_epoch_s
            save_epoch(loop, state, report, metrics, confusion, rank)
            progress.epoch_end(summary_line(report, metrics, settings.epochs))
            stop, why = should_stop(settings, state, device)
    except BaseException:
        for data in (train_data, val_data):
            data.close(wait=False)  # another rank may never drain its share: do not wait for it
        raise
    for data in (train_data, val_data):
        data.close()
    progress.message(why)
    progress.finish()
    if rank == 0:
        tracking.close_run()


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


@dataclass
class PreparedRun:
    """One run resolved on the driver before Ray Train starts."""

    loop: LoopConfig
    storage: str
    output: Path
    schedule: Schedule

    @property
    def settings(self) -> TrainSettings:
        return self.loop.settings

    @property
    def config(self) -> ModelConfig:
        return self.loop.model


def prepare_run(
    settings: TrainSettings, data: DatasetContext | None = None, *, progress: ProgressSender | None = None
) -> PreparedRun:
    """Resolve the dataset (unless given: a sweep prepares it once), model config, run name, storage,
    output folder and tracking URI."""
    from pipelines.runtime import tracking

    data = data or prepare_dataset(settings.data, settings.taxonomy or None)
    planned = resolve_schedule(settings, data.train_paths)
    settings, data = planned.settings, replace(data, train_paths=planned.train_paths)
    config = model_config_for(settings, data.taxonomy, data.spec)
    if not settings.run_name:
        settings = replace(settings, run_name=f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    loop = LoopConfig(
        settings,
        config,
        data,
        tracking.resolve_tracking_uri(settings.tracking_uri or None),
        tracking.git_commit(Path(__file__).parent),
        progress or ProgressSender(),
        tags={"recipe_reason": planned.recipe_line},
    )
    output = Path(settings.output or Path("runs") / settings.run_name).resolve()
    return PreparedRun(loop, resolve_storage(settings.storage), output, planned)


def resolve_storage(storage: str) -> str:
    """Local paths become absolute (Train needs that); URIs such as ``s3://bucket/runs`` stay as they are."""
    return storage if "://" in storage else str(Path(storage).resolve())


def datasets_for(run: PreparedRun) -> dict:
    """Ray Data inputs: path rows (read on the workers) or arrays read in Ray Data tasks."""
    from pipelines.training.ray_data import array_dataset, path_dataset

    data = run.loop.data
    if run.settings.input_mode == "arrays":
        reader = reader_for(run.config, data)
        return {
            "train": array_dataset(data.train_paths, reader, shuffle=True),
            "val": array_dataset(data.val_paths, reader),
        }
    return {"train": path_dataset(data.train_paths, shuffle=True), "val": path_dataset(data.val_paths)}


def make_trainer(run: PreparedRun, callbacks: list | None = None):
    """The ``TorchTrainer`` of a prepared run; worker failures are reported on the run's progress channel."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.runtime.progress import FailureNotice
    from pipelines.training.ray_data import ExactlyOnceDataConfig

    settings = run.settings
    callbacks = [FailureNotice(run.loop.progress, settings.max_failures), *(callbacks or [])]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": run.loop},
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=settings.run_name,
            storage_path=run.storage,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=SCORE, checkpoint_score_order="max"
            ),
            callbacks=callbacks,
        ),
        datasets=datasets_for(run),
        dataset_config=ExactlyOnceDataConfig(),
    )


def run_training(settings: TrainSettings, *, progress: bool = True) -> TrainOutcome:
    """Run (or resume) a training, with its progress on this console; copy the best checkpoint and its
    report to the run's output folder."""
    from pipelines.runtime.cluster import check_placement, connect_ray, quiet_data_context
    from pipelines.runtime.progress import ProgressBoard

    get_preset(
        settings.preset, **{"precision": settings.precision, **settings.overrides}
    )  # a bad preset fails before any work
    data = prepare_dataset(settings.data, settings.taxonomy or None, progress=progress)
    connect_ray()
    quiet_data_context()
    per_worker = {"CPU": settings.cpus_per_worker, "GPU": 1 if settings.use_gpu else 0}
    check_placement(
        per_worker,
        settings.workers,
        "training worker",
        "training worker group",
        "lower --workers or --cpus-per-worker, or drop --use-gpu",
    )
    board = ProgressBoard(bars=progress)
    try:
        run = prepare_run(settings, data, progress=board.sender(settings.workers))
        for line in (run.schedule.recipe_line, run.schedule.sampling_line, run.schedule.summary):
            print(f"[h2crop] {line}", flush=True)
        with RunLock(run.storage, run.settings.run_name, "training"):
            result = make_trainer(run).fit()
            if not result.error:
                return collect_outcome(run, result)
    finally:
        board.close()
    if result.error:
        refused = _refused_resources(result.error)
        if refused is not None:
            raise refused from result.error
        raise result.error


def _refused_resources(error: BaseException) -> SettingError | None:
    """Train's own refusal of a worker group larger than the cluster is the user's setting, not a bug."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return None
        if type(seen).__name__ == "InsufficientClusterResourcesError":
            return SettingError(f"{str(seen).strip().splitlines()[-1]} (--workers, --cpus-per-worker, --use-gpu)")
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def collect_outcome(run: PreparedRun, result) -> TrainOutcome:
    """Copy the best epoch's report, then its checkpoint (renamed into place last, so a ``best.ckpt`` is
    only ever beside its own report) and the settings to the output folder; attach them to MLflow."""
    from pipelines.runtime import tracking

    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda pair: _score(pair[1]))
    output = run.output
    output.mkdir(parents=True, exist_ok=True)
    with best_checkpoint.as_directory() as folder:
        (output / "best.ckpt").unlink(missing_ok=True)
        for item in sorted((Path(folder) / "report").iterdir()):
            copy_atomic(item, output / item.name)
        copy_atomic(Path(folder) / MODEL_FILE, output / "best.ckpt")
    write_text_atomic(
        output / "train_settings.json",
        json.dumps({"settings": run.settings.to_dict(), "model": run.config.to_dict()}, indent=1),
    )
    run_id = str(best_metrics.get("mlflow_run_id") or result.metrics.get("mlflow_run_id", ""))
    uri = run.loop.tracking_uri
    if run_id:
        tracking.log_artifacts(uri, run_id, [output / "best.ckpt"], "best")
        report_files = sorted(
            p for p in output.iterdir() if p.suffix in (".json", ".csv", ".png") and p.name != "train_settings.json"
        )
        tracking.log_artifacts(uri, run_id, report_files, "best_report")
        tracking.log_artifacts(uri, run_id, [output / "train_settings.json"], "config")
    return TrainOutcome(
        run.settings.run_name,
        output,
        output / "best.ckpt",
        best_metrics,
        uri,
        run_id,
        int(result.metrics.get("epoch", 0)),
    )


def copy_atomic(source: Path, target: Path) -> Path:
    with open(source, "rb") as handle:
        return write_atomic(target, lambda file: shutil.copyfileobj(handle, file))


def _score(metrics: dict) -> float:
    value = metrics.get(SCORE, -math.inf)
    return value if value == value else -math.inf
