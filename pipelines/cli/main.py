"""The ``h2crop`` command: thin subcommands that parse, call ``h2crop_core`` / the pipelines, and print.

The options of ``train``, ``evaluate`` and ``map`` are built from their settings dataclasses
(:mod:`pipelines.settings`), so every default lives there. Errors: a user error (any
:class:`~h2crop_core.errors.H2CropError`, wherever it was raised: here, a process pool, a DataLoader worker
or a Ray worker) is one line and exit code 2; anything else is a bug: its traceback, and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from h2crop_core.data.index import DatasetIndex
from h2crop_core.errors import find_user_error
from h2crop_core.taxonomy import load_taxonomy
from pipelines.cli.composite import add_composite_parser
from pipelines.cli.mapping import add_mapping_parsers
from pipelines.cli.model_info import add_model_info_parser
from pipelines.cli.options import add_settings_options, settings_from_args
from pipelines.cli.prepare import add_prepare_parser
from pipelines.cli.sweeps import add_sweep_parsers
from pipelines.settings import BaselineSettings, EvaluateSettings, TrainSettings


# ------------------------------------------------------------------------------------------ commands
def cmd_synth(args: argparse.Namespace) -> int:
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.errors import SettingError
    from h2crop_core.taxonomy import Taxonomy

    if args.size < 96 or args.size % 96:
        raise SettingError(
            f"--size {args.size}: the sample side must be a multiple of 96 (the model's tiles; the benchmark's are 192)"
        )
    if args.products and (args.region_size == 0 or args.region_size % 2):
        raise SettingError(
            f"--region-size {args.region_size}: --products writes the region as delivered products, so it needs a "
            "region whose size is a multiple of 6 (3 for EnMAP, 2 for the 20 m bands)"
        )
    result = synthesize_dataset(
        args.out,
        args.samples,
        seed=args.seed,
        taxonomy=Taxonomy.from_csv(args.taxonomy) if args.taxonomy else None,
        key_style=args.key_style,
        spec=SampleSpec(size=args.size),
        region_size=None if args.region_size == 0 else args.region_size,
        label_fraction=args.label_fraction,
        progress=not args.quiet,
        world=args.world,
        gaps=args.gaps,
    )
    counts = ", ".join(f"{split} {len(names)}" for split, names in result.splits.items())
    print(f"wrote {args.samples} samples to {result.root / 'h5_data'} ({counts}); taxonomy {result.taxonomy.summary()}")
    if result.region:
        print(
            f"wrote a {result.region['size']}x{result.region['size']} px region ({result.region['crs']}) to {result.region['dir']}"
        )
        if args.user_files:
            from h2crop_core.data.synth.user_files import USER_ENMAP_CRS, write_user_files

            files = write_user_files(Path(result.region["dir"]), Path(args.out) / "user_files")
            print(
                f"wrote the region as a user has it to {Path(args.out) / 'user_files'}: monthly S2 files, EnMAP "
                f"in {USER_ENMAP_CRS}, parcels in Lambert-93"
            )
            print(
                f"  map it: h2crop map --checkpoint CKPT --s2 {files['s2']} --enmap {files['enmap']} --prior {files['prior']} --output OUT"
            )
        if args.products:
            from h2crop_core.data.synth.products import products_summary, write_products

            out = Path(args.out) / "products"
            print(
                products_summary(
                    write_products(Path(result.region["dir"]), out, seed=args.seed, progress=not args.quiet)
                )
            )
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
    if not report.ok:  # bad data is the user's to fix (exit 2); exit 1 is kept for h2crop's own bugs
        print(f"h2crop validate: error: {args.data} has problems (listed above and in {output})", file=sys.stderr)
        return 2
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from h2crop_core.data.stats import NormStats, compute_norm_stats, plot_norm_stats

    index = DatasetIndex(args.data)
    paths = index.split_paths(args.split)
    stats = compute_norm_stats(
        paths,
        workers=args.workers,
        progress=not args.quiet,
        meta={
            "split": args.split,
            "dataset_fingerprint": index.fingerprint(),
            **({"train_fingerprint": index.fingerprint(("train",))} if args.split == "train" else {}),
        },
    )
    output = Path(args.output) if args.output else index.norm_stats_path
    stats.to_json(output)
    reference = NormStats.from_json(args.compare) if args.compare else None
    plot = plot_norm_stats(stats, output.with_suffix(".png"), reference)
    print(f"per-band statistics of {len(paths)} {args.split} samples written to {output}; plot {plot}")
    print(
        "  S2 mean "
        + " ".join(f"{v:.0f}" for v in stats.s2_mean)
        + " | std "
        + " ".join(f"{v:.0f}" for v in stats.s2_std)
    )
    print(
        f"  EnMAP mean {stats.enmap_mean.min():.0f}..{stats.enmap_mean.max():.0f}, std "
        f"{stats.enmap_std.min():.0f}..{stats.enmap_std.max():.0f} over {len(stats.enmap_mean)} bands"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from h2crop_core.evaluation import score_predictions
    from h2crop_core.report import build_metrics, format_summary, write_report

    taxonomy = load_taxonomy(args.data, args.taxonomy)
    confusion = score_predictions(args.data, args.split, args.predictions, taxonomy, progress=not args.quiet)
    metrics = build_metrics(
        confusion,
        args.split,
        ignore_background=args.ignore_background,
        mmseg_f1=args.mmseg_f1,
        extra={"predictions": str(args.predictions)},
    )
    written = write_report(metrics, confusion, args.output, taxonomy)
    print(format_summary(metrics))
    print(f"wrote {written['metrics']} and {len(written) - 1} more files (CSVs, confusion.npz, plots) to {args.output}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.settings import parse_overrides
    from pipelines.training.train import run_training

    settings = settings_from_args(TrainSettings, args, overrides=parse_overrides(args.set or []))
    outcome = run_training(settings, progress=not args.quiet)
    best = outcome.best_metrics
    print(
        f"run {outcome.run_name}: {outcome.epochs_done} epoch(s); best val mF1 {best.get('val_mf1', float('nan')):.4f} at epoch {best.get('epoch')}"
    )
    print(f"  best checkpoint  {outcome.best_checkpoint}")
    print(f"  best report      {outcome.output / 'metrics.json'} (+ per-class CSVs and plots)")
    print(
        f"  MLflow           {outcome.tracking_uri}  run {outcome.mlflow_run_id}  "
        f"(h2crop runs ui --tracking-uri {outcome.tracking_uri})"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics, format_summary, write_report

    settings = settings_from_args(EvaluateSettings, args)
    evaluation = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        settings.split,
        decode=settings.decode,
        batch_size=settings.batch_size,
        precision=settings.precision,
        loader_workers=settings.loader_workers,
        device="cuda" if settings.use_gpu else "cpu",
        progress=not args.quiet,
    )
    extra = evaluation.extra
    metrics = build_metrics(
        evaluation.confusion,
        settings.split,
        ignore_background=settings.ignore_background,
        mmseg_f1=settings.mmseg_f1,
        extra=extra,
    )
    written = write_report(metrics, evaluation.confusion, args.output, evaluation.taxonomy)
    print(format_summary(metrics))
    if "argmax_invalid_path_fraction" in extra:
        print(
            f"plain argmax breaks the hierarchy on {100 * extra['argmax_invalid_path_fraction']:.2f}% of pixels (decode: {extra['decode']})"
        )
    print(f"wrote {written['metrics']} and {len(written) - 1} more files (CSVs, confusion.npz, plots) to {args.output}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from h2crop_core.report import format_summary

    settings = settings_from_args(BaselineSettings, args)
    from pipelines.training.baseline import run_baseline

    outcome = run_baseline(settings, args.data, args.output, progress=not args.quiet)
    summary = outcome.summary
    print(
        f"{settings.model} ({settings.target}) on {summary['train_pixels']:,} of {summary['train_labelled_pixels']:,} labelled training pixels "
        f"({summary['features']} features); fit {summary['fit_seconds']:.1f} s, {summary['total_seconds']:.1f} s in all"
    )
    print(format_summary(outcome.metrics))
    print(
        f"wrote {outcome.output / 'metrics.json'} (test; val/ for the validation split), predictions/ and baseline.json"
    )
    print(
        f"  MLflow  {outcome.tracking_uri}  run {outcome.mlflow_run_id} ({outcome.run_name}, h2crop.kind=baseline: `h2crop runs compare` lists it)"
    )
    return 0


# ------------------------------------------------------------------------------------------- parser
def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def add_data_parsers(add) -> None:
    """``synth``, ``validate``, ``stats`` and ``score``: making, checking and scoring data."""
    p = add("synth", "write a synthetic dataset (and region) with the benchmark's exact layout")
    p.add_argument("--out", required=True, type=Path, help="dataset root to create")
    p.add_argument("--samples", type=int, default=32, help="number of samples (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", choices=("drawn", "prosail"), default="drawn", help="class spectra (prosail: world.png)")
    p.add_argument("--gaps", type=float, default=0.0, help="prosail: share of bare soil within fields, [0, 0.9)")
    p.add_argument(
        "--taxonomy", type=Path, help="taxonomy CSV to generate classes from (default: a generated 6/36/82/101 tree)"
    )
    p.add_argument(
        "--key-style",
        choices=("files", "readme"),
        default="files",
        help="HDF5 key spelling: as the files ship (S2_data, ...) or as the README documents (S2, ...)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=192,
        help="sample side in S2 pixels, a multiple of 96 (default 192, the benchmark's; 96 for quick sweeps)",
    )
    p.add_argument(
        "--region-size",
        type=int,
        default=1008,
        help="side of the synthetic mapping region in S2 pixels, a multiple of 3; 0 for none (default 1008)",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="below 1: sparse labels, as from a field survey (about this fraction of parcels labelled, unevenly "
        "over the tiles; default 1: every parcel)",
    )
    p.add_argument(
        "--user-files",
        action="store_true",
        help="also write the region as a user has it: monthly S2 files, EnMAP in another UTM zone, parcels in Lambert-93 (<out>/user_files)",
    )
    p.add_argument(
        "--products",
        action="store_true",
        help="also write the region as delivered products (<out>/products): Sentinel-2 L2A SAFE scenes with clouds, "
        "a STAC ItemCollection, an EnMAP L2A product and the clean monthly truth, for `h2crop composite` and `map --enmap`",
    )
    p.set_defaults(func=cmd_synth)

    for name, help_text, func in (
        ("validate", "check every sample file; write validation.json; exit 2 if any is bad", cmd_validate),
        ("stats", "per-band mean/std over the training split, written to <data>/norm_stats.json", cmd_stats),
    ):
        p = add(name, help_text)
        p.add_argument("--data", required=True, type=Path, help="dataset root")
        p.add_argument(
            "--workers", type=int, default=_default_workers(), help="reader processes (default: CPU count, at most 8)"
        )
        p.set_defaults(func=func)
        if name == "validate":
            p.add_argument("--split", choices=("train", "val", "test"), help="only this split (default: every file)")
            p.add_argument("--taxonomy", type=Path, help="taxonomy CSV (default: <data>/cascade_labels.csv)")
            p.add_argument(
                "--report", type=Path, help="where to write the JSON report (default: <data>/validation.json)"
            )
        else:
            p.add_argument("--split", choices=("train", "val", "test"), default="train")
            p.add_argument(
                "--output", type=Path, help="where to write (default: <data>/norm_stats.json; a .png plot beside it)"
            )
            p.add_argument("--compare", type=Path, help="statistics JSON to plot beside ours (e.g. the published ones)")

    p = add("score", "score external predictions (<sample>.npy (4,H,W) uint8 or <sample>.h5 'pred') against a split")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--predictions", required=True, type=Path, help="folder of <sample>.npy or <sample>.h5 files")
    p.add_argument("--output", required=True, type=Path, help="folder for metrics.json, per-class CSVs and plots")
    p.add_argument("--taxonomy", type=Path, help="taxonomy CSV (default: <data>/cascade_labels.csv)")
    add_settings_options(p, EvaluateSettings, only=("split", "ignore_background", "mmseg_f1"))
    p.set_defaults(func=cmd_score)


def add_model_parsers(add) -> None:
    """``baseline``, ``evaluate`` and ``train``."""
    p = add(
        "baseline",
        "fit a per-pixel classical model (Random Forest, gradient boosting, SVM) on the train split; score val and test like evaluate",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help="folder for metrics.json (test), predictions/, val/ and baseline.json",
    )
    add_settings_options(p, BaselineSettings)
    p.set_defaults(func=cmd_baseline)

    checkpoint_help = "an h2crop checkpoint (e.g. runs/<run>/best.ckpt)"
    p = add("evaluate", "run a checkpoint over a split and score it (metrics.json, CSVs, plots)")
    p.add_argument("--checkpoint", required=True, type=Path, help=checkpoint_help)
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--output", required=True, type=Path, help="folder for metrics.json, per-class CSVs and plots")
    add_settings_options(p, EvaluateSettings)
    p.set_defaults(func=cmd_evaluate)

    p = add("train", "train a preset on Ray (joins RAY_ADDRESS if set, else a local Ray); resumes by --run-name")
    add_settings_options(p, TrainSettings)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="model setting override, e.g. --set precision=bf16 --set fusion=gated (repeatable)",
    )
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2crop",
        description="Four-level crop type mapping from EnMAP + Sentinel-2 (H2Crop benchmark), at scale on Ray.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' log lines and warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, help: sub.add_parser(name, help=help, parents=[common])  # noqa: E731

    add_data_parsers(add)
    model_info = add_model_info_parser(sub)
    model_info.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    model_info.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)

    add_model_parsers(add)
    add_composite_parser(add)
    add_prepare_parser(add)
    add_mapping_parsers(add)
    add_sweep_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.runtime.cluster import configure_console, ray_log_dir

    args = build_parser().parse_args(argv)
    configure_console(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"h2crop {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted below into the user's errors and our bugs
        user_error = find_user_error(error)
        if user_error is not None:
            print(f"h2crop {args.command}: error: {user_error}", file=sys.stderr)
            return 2
        traceback.print_exc()
        hint = f"; Ray's logs: {ray_log_dir()}" if "ray" in sys.modules and sys.modules["ray"].is_initialized() else ""
        print(
            f"h2crop {args.command}: internal error (a bug in h2crop: please report it with the traceback above{hint})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
