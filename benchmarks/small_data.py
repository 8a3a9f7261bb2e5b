"""Small labelled sets: the deep model with its defaults against per-pixel classical baselines.

A generated dataset with survey-like sparse labels (``h2crop synth --label-fraction``: about 10% of the
pixels labelled, unevenly over 32 tiles of 96 px), then, each on this machine with one budget:

* ``h2crop baseline --model rf`` and ``--model svm`` (the window's S2 months + EnMAP per pixel);
* ``h2crop train`` with defaults (no ``--lr``, no ``--epochs``: the recipe ``auto`` picks), one worker with
  every core, stopped by ``--time-budget-minutes``, for each variant: ``faithful`` (the preset as published),
  ``pixel`` (``--set pixel_branch=32``: each pixel's own S2 series and EnMAP spectrum, encoded without
  spatial mixing, concatenated to the fused features) and ``pixel-logits`` (the same branch with its own
  per-level classifier whose logits are added to the heads': ``--set pixel_join=logits``) and
  ``pixel-spectrum`` (that classifier, 64 wide, on the EnMAP spectrum alone, with Gaussian input noise in
  training and its own loss beside the model's: ``pixel_inputs=enmap pixel_noise=1 pixel_loss=1``, the
  remedies for a per-pixel model memorising a few parcels); the best checkpoint is evaluated on the test
  split.

Prints per-level OA and mF1 on the test split and the wall time of each, and checks that the best deep
variant reaches the SVM's level-4 OA. JSON to ``benchmarks/results/small_data.json``.

    python benchmarks/small_data.py [--tiles 32] [--minutes 15] [--label-fraction 0.1] \
        [--variants faithful pixel pixel-logits pixel-spectrum] [--smoke]

``--smoke``: 8 tiles, a 6-second budget, the last variant asked for (by default ``pixel-spectrum``: every
pixel-branch option and the weighted sparse draws), small pixel samples (checks that it runs; the numbers
mean nothing at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

PRESET = "tiny_crops_S2_H_jun"
#: the deep variants: model overrides (--set) on top of the preset
VARIANTS: dict[str, dict] = {
    "faithful": {},
    "pixel": {"pixel_branch": 32},
    "pixel-logits": {"pixel_branch": 32, "pixel_join": "logits"},
    "pixel-spectrum": {
        "pixel_branch": 64,
        "pixel_join": "logits",
        "pixel_inputs": "enmap",
        "pixel_noise": 1.0,
        "pixel_loss": 1.0,
    },
}
BASELINES = ("rf", "svm")


def test_scores(metrics: dict) -> dict:
    """Per-level test OA and mF1 of a ``metrics.json`` payload."""
    return {level: {"oa": values["oa"], "mf1": values["mf1"]} for level, values in metrics["levels"].items()}


def run_baselines(
    root: Path, work: Path, models: tuple[str, ...], window: str, max_pixels: int | None, quiet: bool
) -> dict:
    from pipelines.settings import BaselineSettings
    from pipelines.training.baseline import run_baseline

    results = {}
    for model in models:
        started = time.perf_counter()
        settings = BaselineSettings(
            model=model,
            window=window,
            max_pixels=max_pixels,
            tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
            run_name=f"baseline-{model}",
        )
        outcome = run_baseline(settings, root, work / f"baseline-{model}", progress=not quiet)
        results[model] = {
            "seconds": time.perf_counter() - started,
            "fit_seconds": outcome.summary["fit_seconds"],
            "train_pixels": outcome.summary["train_pixels"],
            "test": test_scores(outcome.metrics),
        }
        print(
            f"baseline {model}: level-4 OA {outcome.metrics['levels']['level4']['oa']:.3f} in {results[model]['seconds']:.0f} s",
            flush=True,
        )
    return results


def run_deep(root: Path, work: Path, variant: str, minutes: float, quiet: bool) -> dict:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics
    from pipelines.settings import TrainSettings
    from pipelines.training.train import run_training

    started = time.perf_counter()
    settings = TrainSettings(  # the defaults, but for where it runs: one worker with every core, a time budget
        data=str(root),
        preset=PRESET,
        overrides=dict(VARIANTS[variant]),
        workers=1,
        cpus_per_worker=float(os.cpu_count() or 1),
        time_budget_minutes=minutes,
        run_name=f"deep-{variant}",
        storage=str(work / "storage"),
        output=str(work / "runs" / variant),
        tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
    )
    outcome = run_training(settings, progress=not quiet)
    trained = time.perf_counter() - started
    evaluation = evaluate_checkpoint(outcome.best_checkpoint, root, "test", progress=False, loader_workers=0)
    metrics = build_metrics(evaluation.confusion, "test")
    result = {
        "seconds": trained,
        "epochs": outcome.epochs_done,
        "best_epoch": outcome.best_metrics.get("epoch"),
        "best_val_mf1": outcome.best_metrics.get("val_mf1"),
        "test": test_scores(metrics),
    }
    print(
        f"deep {variant}: level-4 OA {metrics['levels']['level4']['oa']:.3f} after {outcome.epochs_done} epochs, {trained:.0f} s",
        flush=True,
    )
    return result


def count_parcels(root: Path, split: str) -> dict:
    """Labelled parcels (connected regions of one level-4 class) and pixels of a split: with sparse labels a
    few parcels carry the whole score, so one parcel is worth about 1/parcels of OA."""
    from scipy import ndimage

    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.reader import infer_dataset_spec, read_sample
    from h2crop_core.taxonomy import UNLABELLED

    paths = DatasetIndex(root).split_paths(split)
    spec = infer_dataset_spec(paths)
    parcels = pixels = 0
    classes: set[int] = set()
    for path in paths:
        leaf = read_sample(path, modalities=("label",), spec=spec)["label"][3]
        for value in set(map(int, leaf[leaf != UNLABELLED].ravel())):
            parcels += ndimage.label(leaf == value)[1]
            classes.add(value)
        pixels += int((leaf != UNLABELLED).sum())
    return {"tiles": len(paths), "parcels": parcels, "pixels": pixels, "leaf_classes": len(classes)}


def print_table(rows: dict[str, dict]) -> None:
    levels = ("level1", "level2", "level3", "level4")
    width = max(map(len, rows)) + 2
    print(
        f"\n{'run':<{width}}{'seconds':>8}"
        + "".join(f"{'L' + lv[-1] + ' OA':>8}" for lv in levels)
        + "".join(f"{'L' + lv[-1] + ' mF1':>8}" for lv in levels)
    )
    for name, row in rows.items():
        test = row["test"]
        print(
            f"{name:<{width}}{row['seconds']:>8.0f}"
            + "".join(f"{test[lv]['oa']:>8.3f}" for lv in levels)
            + "".join(f"{test[lv]['mf1']:>8.3f}" for lv in levels)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=32, help="generated 96-px tiles (16-32: a small survey)")
    parser.add_argument("--label-fraction", type=float, default=0.1, help="about this fraction of parcels labelled")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each deep variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument(
        "--keep", type=Path, help="keep the data, runs and MLflow store here instead of a temporary folder"
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "small_data.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()

    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.synth import synthesize_dataset

    max_pixels = None
    if args.smoke:
        args.tiles, args.minutes, args.variants, max_pixels = 8, 0.1, args.variants[-1:], 500
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        root = work / "data"
        if not (root / "data_lists").is_dir():
            synthesize_dataset(
                root,
                args.tiles,
                seed=args.seed,
                spec=SampleSpec(size=96),
                region_size=None,
                label_fraction=args.label_fraction,
                progress=False,
            )
        labelled = {split: count_parcels(root, split) for split in ("train", "val", "test")}
        print(
            "labelled: "
            + "; ".join(
                f"{split} {c['tiles']} tiles, {c['parcels']} parcels, {c['pixels']:,} pixels, {c['leaf_classes']} leaf classes"
                for split, c in labelled.items()
            ),
            flush=True,
        )
        rows = {
            f"baseline {m}": r
            for m, r in run_baselines(root, work, BASELINES, PRESET.rsplit("_", 1)[-1], max_pixels, args.smoke).items()
        }
        for variant in args.variants:
            rows[f"deep {variant}"] = run_deep(root, work, variant, args.minutes, args.smoke)
    print_table(rows)
    svm = rows["baseline svm"]["test"]["level4"]["oa"]
    best = max((r["test"]["level4"]["oa"], name) for name, r in rows.items() if name.startswith("deep"))
    checks = {f"best deep variant ({best[1]}) reaches the SVM's level-4 OA": best[0] >= svm}
    for name, ok in checks.items():
        print(
            f"{'PASS' if ok else 'FAIL'}  {name}: {best[0]:.3f} vs {svm:.3f} (one of the {labelled['test']['parcels']} test parcels "
            f"is about {1 / max(labelled['test']['parcels'], 1):.2f} of OA)"
        )
    results = {
        "tiles": args.tiles,
        "label_fraction": args.label_fraction,
        "minutes": args.minutes,
        "preset": PRESET,
        "cpus": os.cpu_count(),
        "labelled": labelled,
        "runs": rows,
        "checks": checks,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
