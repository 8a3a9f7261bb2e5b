"""Distributed training on Ray Train (V2): the driver of a run, its checkpoints and resume.

``run_training`` is what ``h2crop train`` calls. It joins the cluster named by ``RAY_ADDRESS`` (as under
``ray job submit``) or starts a local Ray, then runs a ``TorchTrainer`` whose worker loop
(:mod:`pipelines.training.worker`) reads top to bottom as the named steps of :mod:`pipelines.training.steps`:

* inputs: Ray Data datasets of sample paths, split exactly once per epoch across workers (``ray_data``);
* every epoch: train (per-level cross-entropy, AdamW, warm-up + cosine, bf16 autocast, augmentations,
  gradient accumulation), validate with confusion matrices summed across ranks, report;
* rank 0 writes a self-contained checkpoint plus optimizer state and the epoch's report, logs to MLflow and
  sends progress to the driver's console; ``ray.train.report`` hands the checkpoint to Train, which keeps
  the latest and the best by validation mF1;
* a dead worker restarts the group from the latest checkpoint (``FailureConfig``); re-running with the
  same ``--run-name`` and storage resumes the run instead of starting over.

What depends only on the dataset (taxonomy, sample layout, statistics, split paths) is a
:class:`~pipelines.training.context.DatasetContext`, prepared once and reusable by every run of a sweep.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.files import write_atomic, write_text_atomic
from h2crop_core.models.heads import resolve_decode
from h2crop_core.models.presets import ModelConfig, get_preset
from h2crop_core.runlock import RunLock
from pipelines.runtime.progress import ProgressSender
from pipelines.settings import TrainSettings
from pipelines.training.context import DatasetContext, LoopConfig, model_config_for, prepare_dataset, reader_for
from pipelines.training.finetune import INIT_REPORT, START_SETTINGS, StartPlan, plan_start
from pipelines.training.schedule import Schedule, resolve_schedule
from pipelines.training.steps import (
    SCORE,
)
from pipelines.training.worker import MODEL_FILE, train_loop_per_worker


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
    start: StartPlan = field(default_factory=StartPlan)

    @property
    def settings(self) -> TrainSettings:
        return self.loop.settings

    @property
    def config(self) -> ModelConfig:
        return self.loop.model


def prepare_run(
    settings: TrainSettings,
    data: DatasetContext | None = None,
    *,
    progress: ProgressSender | None = None,
    start: StartPlan | None = None,
) -> PreparedRun:
    """Resolve the dataset (unless given: a sweep prepares it once), model config, run name, storage,
    output folder, tracking URI and what the run starts from (unless given: checked before Ray started)."""
    from pipelines.runtime import tracking

    data = data or prepare_dataset(settings.data, settings.taxonomy or None)
    planned = resolve_schedule(settings, data.train_paths)
    samples = len(data.train_paths)  # the recipe's choice is by the training set, before the plan's repeats
    settings, data = planned.settings, replace(data, train_paths=planned.train_paths)
    config = model_config_for(settings, data.taxonomy, data.spec, samples)
    start = start if start is not None else plan_start(settings, config, data)
    # validation decodes as evaluate and map do by default, so a checkpoint has one set of numbers
    settings = replace(settings, decode=resolve_decode(settings.decode, config.levels))
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
        draw_weights=planned.weights,
        start_params=start.report.params() if start.report else {},
    )
    output = Path(settings.output or Path("runs") / settings.run_name).resolve()
    return PreparedRun(loop, resolve_storage(settings.storage), output, planned, start)


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
    config = model_config_for(settings, data.taxonomy, data.spec, len(data.train_paths))
    start = plan_start(settings, config, data)  # before Ray: fails fast
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
        run = prepare_run(settings, data, progress=board.sender(settings.workers), start=start)
        for line in (run.schedule.recipe_line, run.schedule.sampling_line, run.schedule.summary, *start.lines):
            print(f"[h2crop] {line}", flush=True)
        with RunLock(run.storage, run.settings.run_name, "training") as lock:
            check_run_record(run)
            write_start_report(run)
            result = make_trainer(run).fit()
            if not result.error:
                lock.check()  # still this run's name: a storage outage may have handed it to another run
                return collect_outcome(run, result)
    finally:
        board.close()
    if result.error:
        refused = _refused_resources(result.error)
        if refused is not None:
            raise refused from result.error
        raise result.error


#: the run's own record beside Train's checkpoints: what it was started with
RUN_RECORD = "h2crop_run.json"
#: settings a resumed run may change: where and on what it runs, and for how long; not what it learns
RESUMABLE = (
    "workers", "use_gpu", "cpus_per_worker", "loader_workers", "input_mode", "storage", "output", "tracking_uri",
    "experiment", "max_failures", "time_budget_minutes", "epochs", "steps", "patience",
    "data",  # the folder may move: its content is compared by fingerprint
)  # fmt: skip


def run_record(run: PreparedRun) -> dict:
    """What a run is: its settings (but :data:`RESUMABLE`; the start settings only when given, so the records
    of runs started before they existed still match), its model and its data (fingerprint and what it
    summarises), as JSON."""
    from h2crop_core.data.index import DatasetIndex

    unset = {
        f.name for f in fields(TrainSettings) if f.name in START_SETTINGS and getattr(run.settings, f.name) == f.default
    }
    settings = {k: v for k, v in run.settings.to_dict().items() if k not in RESUMABLE and k not in unset}
    data = {"fingerprint": run.loop.data.fingerprint, "splits": DatasetIndex(run.loop.data.root).summary()}
    return json.loads(json.dumps({"settings": settings, "model": run.config.to_dict(), "data": data}, default=str))


def check_run_record(run: PreparedRun) -> None:
    """A new run writes its record; a resumed one (the same name and storage) must match it: another preset,
    learning rate or data would continue the old run's weights and MLflow run under params that no longer
    say what it did. Refused in one line naming what differs."""
    from h2crop_core.records import record_differences
    from h2crop_core.storage import Remote

    folder, now = Remote(f"{run.storage.rstrip('/')}/{run.settings.run_name}"), run_record(run)
    if not folder.exists(RUN_RECORD):
        folder.write(RUN_RECORD, lambda file: file.write(json.dumps(now, indent=1).encode()))
        return
    differing = record_differences(json.loads(folder.read_text(RUN_RECORD)), now)
    if differing:
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise SettingError(
            f"run {run.settings.run_name} in {run.storage} was started with other settings or data: "
            f"{'; '.join(differing[:3])}{more}; resume it as it started, or choose another --run-name"
        )


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
        config_files = [output / "train_settings.json"]
        if run.start.report is not None:  # written when the run started (write_start_report)
            config_files.append(output / INIT_REPORT)
        report_files = sorted(
            p for p in output.iterdir() if p.suffix in (".json", ".csv", ".png") and p not in config_files
        )
        tracking.log_artifacts(uri, run_id, report_files, "best_report")
        tracking.log_artifacts(uri, run_id, config_files, "config")
    return TrainOutcome(
        run.settings.run_name,
        output,
        output / "best.ckpt",
        best_metrics,
        uri,
        run_id,
        int(result.metrics.get("epoch", 0)),
    )


def write_start_report(run: PreparedRun) -> Path | None:
    """The start weights' report (``init_report.json``) in the run's output folder, from the start."""
    if run.start.report is None:
        return None
    return write_text_atomic(run.output / INIT_REPORT, json.dumps(run.start.report.to_dict(), indent=1))


def copy_atomic(source: Path, target: Path) -> Path:
    with open(source, "rb") as handle:
        return write_atomic(target, lambda file: shutil.copyfileobj(handle, file))


def _score(metrics: dict) -> float:
    value = metrics.get(SCORE, -math.inf)
    return value if value == value else -math.inf
