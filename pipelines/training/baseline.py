"""``h2crop baseline``: fit a per-pixel classical model on the train split, predict val and test, score them
with the code ``evaluate`` uses, and log an MLflow run (``h2crop.kind=baseline``) beside the deep runs.

Outputs in ``--output``: ``metrics.json`` (test; the layout of ``h2crop evaluate``) with its CSVs and plots,
``predictions/<sample>.npy`` (test), ``val/`` (the same for the validation split, whose numbers are the
run's ``val_*`` metrics, the ones ``h2crop runs compare`` ranks every run by), and ``baseline.json``: what
was fitted on how many pixels, and the time each step took. With ``--predict scored`` (the default) only the
labelled pixels are classified, the only ones a metric reads, and the others of ``predictions/`` hold 0;
``--predict all`` classifies every pixel, for full prediction maps: the same per-level metrics, but hierarchy
consistency (counted by the scorer over every pixel) then also covers the unlabelled pixels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from h2crop_core.baseline import DEFAULT_MAX_PIXELS, PixelBaseline, collect_pixels, features_reader, predict_split
from h2crop_core.data.index import DatasetError, DatasetIndex
from h2crop_core.data.reader import infer_dataset_spec
from h2crop_core.evaluation import score_predictions
from h2crop_core.files import write_text_atomic
from h2crop_core.report import build_metrics, metric_values, write_report
from h2crop_core.taxonomy import Taxonomy, load_taxonomy
from pipelines.runtime import tracking
from pipelines.settings import BaselineSettings


@dataclass
class BaselineOutcome:
    """What a baseline run produced."""

    metrics: dict  #: test metrics (metrics.json)
    val_metrics: dict | None
    summary: dict  #: baseline.json
    output: Path
    run_name: str
    mlflow_run_id: str
    tracking_uri: str


def score_split(
    root: Path, split: str, predictions: Path, out_dir: Path, taxonomy: Taxonomy, extra: dict, progress: bool
) -> dict:
    """Score a folder of predictions and write its report; returns the metrics."""
    confusion = score_predictions(root, split, predictions, taxonomy, progress=progress)
    metrics = build_metrics(confusion, split, extra=extra)
    write_report(metrics, confusion, out_dir, taxonomy)
    return metrics


def run_baseline(
    settings: BaselineSettings, data: str | Path, output: str | Path, *, progress: bool = True
) -> BaselineOutcome:
    """Fit, predict, score and log one baseline (see the module docstring)."""
    root, out = Path(data), Path(output)
    index = DatasetIndex(root)
    taxonomy = load_taxonomy(root, settings.taxonomy or None)
    train_paths = index.split_paths("train")
    spec = infer_dataset_spec(train_paths)
    reader = features_reader(settings.window, taxonomy, spec)
    max_pixels = settings.max_pixels or DEFAULT_MAX_PIXELS[settings.model]
    timings, started = {}, time.perf_counter()
    pixels = collect_pixels(train_paths, reader, max_pixels, seed=settings.seed, progress=progress)
    if len(pixels.labels) == 0:
        raise DatasetError(
            f"{index.split_file('train')}: the train split's {len(train_paths)} samples hold no labelled pixel (every label is 255)"
        )
    timings["read_seconds"] = time.perf_counter() - started
    baseline = PixelBaseline(settings.model, settings.target, taxonomy).fit(
        pixels, seed=settings.seed, threads=settings.threads, progress=progress
    )
    timings["fit_seconds"] = baseline.fit_seconds
    summary = {
        "settings": settings.to_dict(),
        "max_pixels": max_pixels,
        "train_tiles": pixels.tiles,
        "train_labelled_pixels": pixels.labelled,
        "train_pixels": len(pixels.labels),
        "train_pixels_per_level": pixels.per_level,
        "features": int(pixels.features.shape[1]),
    }
    splits = [("val", out / "val")] if index.split_file("val").is_file() else []
    metrics = {}
    for split, folder in [*splits, ("test", out)]:
        predictions = folder / "predictions"
        timings[f"predict_{split}_seconds"] = predict_split(
            baseline, index.split_paths(split), reader, predictions, mode=settings.predict, progress=progress
        )
        extra = {
            "baseline": settings.model,
            "target": settings.target,
            "window": settings.window,
            "train_pixels": len(pixels.labels),
            "predictions": str(predictions),
            "predicted_pixels": settings.predict,
        }
        metrics[split] = score_split(root, split, predictions, folder, taxonomy, extra, progress)
    summary.update(timings, total_seconds=time.perf_counter() - started)
    write_text_atomic(out / "baseline.json", json.dumps(summary, indent=1))
    run_name = settings.run_name or f"baseline-{settings.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    uri, run_id = log_baseline(settings, run_name, root, index, metrics, summary, out)
    return BaselineOutcome(metrics["test"], metrics.get("val"), summary, out, run_name, run_id, uri)


def log_baseline(
    settings: BaselineSettings, run_name: str, root: Path, index: DatasetIndex, metrics: dict, summary: dict, out: Path
) -> tuple[str, str]:
    """One finished MLflow run: the settings as params, val and test metrics at step 1 (the "epoch" that
    ``runs compare`` reads), the reports as artifacts."""
    uri = tracking.resolve_tracking_uri(settings.tracking_uri)
    params = {
        "settings": {**settings.to_dict(), "data": str(root), "output": str(out), "max_pixels": summary["max_pixels"]},
        "model": {"name": f"baseline-{settings.model}"},
    }
    tags = {
        tracking.KIND_TAG: "baseline",
        "h2crop.dataset_fingerprint": index.fingerprint(),
        "h2crop.git_commit": tracking.git_commit(),
    }
    run_id = tracking.open_run(uri, settings.experiment, run_name, params, tags)
    try:
        values = {key: summary[key] for key in ("train_pixels", "fit_seconds", "total_seconds")}
        for split, split_metrics in metrics.items():
            values.update(metric_values(split_metrics, split))
        tracking.log_epoch(values, step=1)
        tracking.log_artifacts(uri, run_id, [out / "metrics.json", out / "baseline.json"])
        if "val" in metrics:
            tracking.log_artifacts(uri, run_id, [out / "val" / "metrics.json"], folder="val")
    except BaseException:
        tracking.close_run("FAILED")
        raise
    tracking.close_run()
    return uri, run_id
