"""The ``h2crop`` command: thin subcommands that parse, call ``h2crop_core`` / the pipelines, and print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from h2crop_core.data.index import DatasetError, DatasetIndex
from h2crop_core.data.reader import SampleError
from h2crop_core.evaluation import PredictionError
from h2crop_core.taxonomy import TaxonomyError, load_taxonomy
from pipelines.model_info import add_model_info_parser


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


# ------------------------------------------------------------------------------------------ commands
def cmd_synth(args: argparse.Namespace) -> int:
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_csv(args.taxonomy) if args.taxonomy else None
    result = synthesize_dataset(
        args.out,
        args.samples,
        seed=args.seed,
        taxonomy=taxonomy,
        key_style=args.key_style,
        region_size=None if args.region_size == 0 else args.region_size,
        progress=not args.quiet,
    )
    counts = ", ".join(f"{split} {len(names)}" for split, names in result.splits.items())
    print(f"wrote {args.samples} samples to {result.root / 'h5_data'} ({counts}); taxonomy {result.taxonomy.summary()}")
    if result.region:
        print(f"wrote a {result.region['size']}x{result.region['size']} px region ({result.region['crs']}) to {result.region['dir']}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from h2crop_core.data.validate import VALIDATION_FILENAME, validate_dataset

    taxonomy = load_taxonomy(args.data, args.taxonomy)
    report = validate_dataset(args.data, args.split, taxonomy=taxonomy, workers=args.workers, progress=not args.quiet)
    output = Path(args.report) if args.report else Path(args.data) / VALIDATION_FILENAME
    report.to_json(output)
    print(report.summary())
    print(f"taxonomy: {taxonomy.summary()}")
    print(f"report: {output}")
    return 0 if report.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from h2crop_core.data.stats import NormStats, compute_norm_stats, plot_norm_stats

    index = DatasetIndex(args.data)
    paths = index.split_paths(args.split)
    stats = compute_norm_stats(
        paths, workers=args.workers, progress=not args.quiet, meta={"split": args.split, "dataset_fingerprint": index.fingerprint()}
    )
    output = Path(args.output) if args.output else index.norm_stats_path
    stats.to_json(output)
    reference = NormStats.from_json(args.compare) if args.compare else None
    plot = plot_norm_stats(stats, output.with_suffix(".png"), reference)
    print(f"per-band statistics of {len(paths)} {args.split} samples written to {output}; plot {plot}")
    print("  S2 mean " + " ".join(f"{v:.0f}" for v in stats.s2_mean) + " | std " + " ".join(f"{v:.0f}" for v in stats.s2_std))
    print(f"  EnMAP mean {stats.enmap_mean.min():.0f}..{stats.enmap_mean.max():.0f}, std {stats.enmap_std.min():.0f}..{stats.enmap_std.max():.0f} over {len(stats.enmap_mean)} bands")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from h2crop_core.evaluation import score_predictions
    from h2crop_core.report import build_metrics, format_summary, write_report

    taxonomy = load_taxonomy(args.data, args.taxonomy)
    confusion = score_predictions(args.data, args.split, args.predictions, taxonomy, progress=not args.quiet)
    metrics = build_metrics(
        confusion, args.split, ignore_background=args.ignore_background, mmseg_f1=args.mmseg_f1, extra={"predictions": str(args.predictions)}
    )
    written = write_report(metrics, confusion, args.output, taxonomy)
    print(format_summary(metrics))
    print(f"wrote {written['metrics']} and {len(written) - 1} more files (CSVs, confusion.npz, plots) to {args.output}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import TrainSettings, parse_overrides, run_training

    settings = TrainSettings(
        data=str(args.data),
        preset=args.preset,
        overrides=parse_overrides(args.set or []),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        grad_accum=args.grad_accum,
        precision=args.precision,
        cutmix_p=args.cutmix,
        input_mode=args.input_mode,
        loader_workers=args.loader_workers,
        seed=args.seed,
        run_name=args.run_name or "",
        storage=str(args.storage),
        output=str(args.output or ""),
        tracking_uri=args.tracking_uri or "",
        experiment=args.experiment,
        max_failures=args.max_failures,
        taxonomy=str(args.taxonomy or ""),
        warmup_iters=args.warmup_iters,
        time_budget_s=args.time_budget_minutes * 60,
    )
    outcome = run_training(settings)
    best = outcome.best_metrics
    print(f"run {outcome.run_name}: {outcome.epochs_done} epoch(s); best val mF1 {best.get('val_mf1', float('nan')):.4f} at epoch {best.get('epoch')}")
    print(f"  best checkpoint  {outcome.best_checkpoint}")
    print(f"  best report      {outcome.output / 'metrics.json'} (+ per-class CSVs and plots)")
    print(f"  MLflow           {outcome.tracking_uri}  run {outcome.mlflow_run_id}  (mlflow ui --backend-store-uri {outcome.tracking_uri})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics, format_summary, write_report

    evaluation = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.split,
        decode=args.decode,
        batch_size=args.batch_size,
        precision=args.precision,
        loader_workers=args.loader_workers,
        device="cuda" if args.use_gpu else "cpu",
        progress=not args.quiet,
    )
    extra = evaluation.extra
    metrics = build_metrics(evaluation.confusion, args.split, ignore_background=args.ignore_background, mmseg_f1=args.mmseg_f1, extra=extra)
    written = write_report(metrics, evaluation.confusion, args.output, evaluation.taxonomy)
    print(format_summary(metrics))
    if "argmax_invalid_path_fraction" in extra:
        print(f"plain argmax breaks the hierarchy on {100 * extra['argmax_invalid_path_fraction']:.2f}% of pixels (decode: {args.decode})")
    print(f"wrote {written['metrics']} and {len(written) - 1} more files (CSVs, confusion.npz, plots) to {args.output}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from pipelines.mapping import MapSettings, map_region

    settings = MapSettings(
        tile=args.tile, margin=args.margin, batch_size=args.batch_size, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
        use_gpu=args.use_gpu, decode=args.decode, precision=args.precision,
    )
    manifest = map_region(args.checkpoint, args.region, args.output, settings, progress=not args.quiet)
    files = ", ".join(manifest["files"].values())
    print(
        f"mapped {manifest['height']}×{manifest['width']} pixels in {manifest['tiles']} tiles "
        f"({manifest.get('tiles_predicted', 0)} predicted now, {manifest.get('tiles_resumed', 0)} resumed): {files} and map.json in {args.output}"
    )
    return 0


def add_metric_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ignore-background", action="store_true", help="leave class 0 out of the means and OA (stricter)")
    p.add_argument(
        "--mmseg-f1",
        action="store_true",
        help="reproduce the research code's F1 exactly: classes present but never correctly predicted are skipped (inflates mF1)",
    )


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2crop",
        description="Four-level crop type mapping from EnMAP + Sentinel-2 (H2Crop benchmark), at scale on Ray.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic dataset (and region) with the benchmark's exact layout")
    p.add_argument("--out", required=True, type=Path, help="dataset root to create")
    p.add_argument("--samples", type=int, default=32, help="number of samples (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--taxonomy", type=Path, help="taxonomy CSV to generate classes from (default: a generated 6/36/82/101 tree)")
    p.add_argument("--key-style", choices=("files", "readme"), default="files", help="HDF5 key spelling: as the files ship (S2_data, ...) or as the README documents (S2, ...)")
    p.add_argument("--region-size", type=int, default=1008, help="side of the synthetic mapping region in S2 pixels, a multiple of 3; 0 for none (default 1008)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("validate", help="check every sample file; write validation.json; exit 1 if any is bad")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--split", choices=("train", "val", "test"), help="only this split (default: every file)")
    p.add_argument("--taxonomy", type=Path, help="taxonomy CSV (default: <data>/cascade_labels.csv)")
    p.add_argument("--report", type=Path, help="where to write the JSON report (default: <data>/validation.json)")
    p.add_argument("--workers", type=int, default=_default_workers(), help="reader processes (default: CPU count, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("stats", help="per-band mean/std over the training split, written to <data>/norm_stats.json")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--split", choices=("train", "val", "test"), default="train")
    p.add_argument("--output", type=Path, help="where to write (default: <data>/norm_stats.json; a .png plot beside it)")
    p.add_argument("--compare", type=Path, help="statistics JSON to plot beside ours (e.g. the published ones)")
    p.add_argument("--workers", type=int, default=_default_workers(), help="reader processes (default: CPU count, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("score", help="score external predictions (<sample>.npy (4,H,W) uint8 or <sample>.h5 'pred') against a split")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--predictions", required=True, type=Path, help="folder of <sample>.npy or <sample>.h5 files")
    p.add_argument("--output", required=True, type=Path, help="folder for metrics.json, per-class CSVs and plots")
    p.add_argument("--taxonomy", type=Path, help="taxonomy CSV (default: <data>/cascade_labels.csv)")
    add_metric_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_score)

    add_model_info_parser(sub)

    p = sub.add_parser("evaluate", help="run a checkpoint over a split and score it (metrics.json, CSVs, plots)")
    p.add_argument("--checkpoint", required=True, type=Path, help="an h2crop checkpoint (e.g. runs/<run>/best.ckpt)")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--output", required=True, type=Path, help="folder for metrics.json, per-class CSVs and plots")
    p.add_argument("--decode", choices=("argmax", "consistent"), default="argmax", help="per-level argmax, or the most probable taxonomy path (levels always agree)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--precision", choices=("fp32", "bf16"), help="override the checkpoint's precision")
    p.add_argument("--loader-workers", type=int, default=1, help="reader processes")
    p.add_argument("--use-gpu", action="store_true")
    add_metric_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("map", help="map a georeferenced region with a checkpoint: one Cloud-Optimized GeoTIFF per level; resumes by tile")
    p.add_argument("--checkpoint", required=True, type=Path, help="an h2crop checkpoint (e.g. runs/<run>/best.ckpt)")
    p.add_argument("--region", required=True, type=Path, help="region folder with region.json, s2.tif, enmap.tif, prior.tif (h2crop synth --region writes one)")
    p.add_argument("--output", required=True, type=Path, help="output folder: level<k>.tif, map.json, tiles/ (rerun to resume)")
    p.add_argument("--tile", type=int, default=192, help="model tile side in S2 pixels, a multiple of 96 (default 192, the benchmark's)")
    p.add_argument("--margin", type=int, default=16, help="pixels at each inner tile edge left to the neighbouring tile")
    p.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass")
    p.add_argument("--actors", type=int, default=1, help="model replicas working in parallel (Ray actors)")
    p.add_argument("--cpus-per-actor", type=float, help="CPUs (and torch threads) per actor (default: this machine's cores shared among the actors)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per actor")
    p.add_argument("--decode", choices=("auto", "argmax", "consistent"), default="auto", help="consistent: most probable taxonomy path, the four maps always agree; argmax: per level; auto (default): consistent for four-level models, else argmax")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="override the checkpoint's precision")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("train", help="train a preset on Ray (joins RAY_ADDRESS if set, else a local Ray); resumes by --run-name")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--preset", required=True, help="model preset, e.g. crops_S2_H_P_jun or tiny_crops_S2_H_P_jun (h2crop model-info --all)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (one per GPU with --use-gpu)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4, help="samples per worker per step (default 4, the benchmark's)")
    p.add_argument("--lr", type=float, default=6e-5, help="peak AdamW learning rate (default 6e-5, the benchmark's)")
    p.add_argument("--warmup-iters", type=int, default=1000, help="linear warm-up steps (capped at 10%% of all steps)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast precision (default bf16; the benchmark trained in mixed precision)")
    p.add_argument("--cutmix", type=float, default=0.5, help="CutMix probability per sample (0 disables)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model setting override, e.g. --set precision=bf16 --set fusion=gated (repeatable)")
    p.add_argument("--input-mode", choices=("paths", "arrays"), default="paths", help="shard paths and read on the workers (default) or read in Ray Data tasks")
    p.add_argument("--loader-workers", type=int, default=1, help="reader processes per training worker (paths mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-name", help="name of the run; re-running with the same name and storage resumes it")
    p.add_argument("--storage", default="ray_results", help="Ray Train storage: a folder, or a URI such as s3://bucket/runs (multi-node runs need storage every node reaches)")
    p.add_argument("--output", type=Path, help="where best.ckpt and the best epoch's metrics.json go (default runs/<run-name>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///./mlruns.db; an mlflow server on clusters)")
    p.add_argument("--experiment", default="h2crop", help="MLflow experiment")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint before giving up")
    p.add_argument("--taxonomy", type=Path, help="taxonomy CSV (default: <data>/cascade_labels.csv)")
    p.add_argument("--time-budget-minutes", type=float, default=0.0, help="train for at most this long: stop before an epoch that would overrun it (0: no limit)")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, DatasetError, SampleError, TaxonomyError, PredictionError, FileNotFoundError, ValueError) as error:
        print(f"h2crop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"h2crop {args.command}: interrupted", file=sys.stderr)
        return 130




if __name__ == "__main__":
    sys.exit(main())
