"""The Ray Train worker loop: restore, then train / validate / report each epoch until done.

It reads top to bottom as the named steps of :mod:`pipelines.training.steps` plus the Ray parts here: a
restored state (Train's latest checkpoint after a restart or on a resumed run), this worker's shards, rank 0's
MLflow run, and each epoch's report to Train (a barrier on every rank) with rank 0's checkpoint.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.report import write_report
from pipelines.runtime.progress import ProgressSender
from pipelines.training.context import LoopConfig, jitter_for, reader_for
from pipelines.training.finetune import apply_start
from pipelines.training.steps import (
    TrainState,
    epoch_report,
    fit_to_budget,
    make_state,
    should_stop,
    summary_line,
    train_epoch,
    validate,
)

MODEL_FILE = "model.ckpt"


STATE_FILE = "train_state.pt"


# ------------------------------------------------------------------------------ the worker's Ray steps
def restore(loop: LoopConfig, device: torch.device, world: int) -> TrainState:
    """A fresh state (with the run's start weights), or the one of Train's latest checkpoint (after a restart
    or on a resumed run), wrapped in DDP."""
    import ray.train
    import ray.train.torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        state = start_state(loop, device, world)
    else:
        with checkpoint.as_directory() as folder:
            state = start_state(loop, device, world, Path(folder))
        kept = " from its own weights (the start weights are not applied again)" if loop.start_params else ""
        loop.progress.message(f"resuming {loop.settings.run_name} after epoch {state.epoch}{kept}")
    state.model = ray.train.torch.prepare_model(state.model)
    return state


def start_state(loop: LoopConfig, device: torch.device, world: int, saved: Path | None = None) -> TrainState:
    """The state a worker starts with: fresh weights with ``--init`` / ``--pretrained-s2`` applied, or those of
    the checkpoint folder ``saved`` (its model and training state): a restored run keeps its own weights and
    never takes the start weights again."""
    state = make_state(loop.model, loop.settings, len(loop.data.train_paths), world, device)
    if saved is None:
        apply_start(state.core, loop.settings)
        return state
    restored = load_checkpoint(saved / MODEL_FILE, device=device).model.state_dict()
    state.model.load_state_dict(restored)
    state.load_state_dict(torch.load(saved / STATE_FILE, map_location="cpu", weights_only=True))
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
    if loop.start_params:
        params["init"] = loop.start_params  # init.loaded, init.heads.reinitialised, ...
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
            contract=loop.data.contract,
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
    train_data, val_data = shard_readers(loop, device)
    # loss weights per sample (None for the benchmark's plan: each tile once) and the spectral augmentation
    common = dict(factor=factor, weights=loop.draw_weights, jitter=jitter_for(settings, loop.data))
    try:
        stop, why = should_stop(settings, state, device)
        while not stop:
            started, more = time.perf_counter(), state.epoch + 1 < settings.epochs  # prefetch unless surely the last
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + state.epoch * 101 + rank)
            batches = train_data.epoch(shuffle_seed=settings.seed * 7919 + state.epoch * 31 + rank, prefetch_next=more)
            progress.epoch_start(state.epoch + 1, settings.epochs, batches.batches)
            steps = dict(common, generator=generator, started=started, on_step=progress.step if rank == 0 else None)
            totals = train_epoch(state, batches, settings, levels, **steps)
            val_batches = val_data.epoch(prefetch_next=more)
            confusion = validate(state.core, val_batches, loop.data.taxonomy, levels, device, settings.decode)
            report, metrics = epoch_report(
                state, totals, confusion, time.perf_counter() - started, device, settings.decode
            )
            state.epoch, state.last_epoch_s = state.epoch + 1, report["epoch_seconds"]
            state.spent_s += state.last_epoch_s
            progress.message(fit_to_budget(state, settings, device))
            stop, why = should_stop(settings, state, device)
            report["last_epoch"] = int(stop)  # a sweep's scheduler never stops a trial at its last epoch
            save_epoch(loop, state, report, metrics, confusion, rank)
            progress.epoch_end(summary_line(report, metrics, settings.epochs))
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
