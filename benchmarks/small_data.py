"""Small labelled sets: the deep model with its defaults against per-pixel classical baselines, over several
generated worlds and several sample draws, so that one lucky set cannot decide.

Protocol (``docs/benchmarks.md``, "Small labelled sets"):

* **Worlds**: ``--worlds`` generated worlds (``h2crop synth --world prosail`` by default: each a taxonomy and
  class spectra from PROSPECT-D + 4SAIL driven by per-class phenology; world ``w`` has seed ``w``).
* **Seeds**: in each world, ``--seeds`` draws of a survey-like labelled set (``--label-fraction``: about 10%
  of the parcels labelled, unevenly over ``--tiles`` tiles of 96 px; tiles, parcels, labels and noise
  differ by seed) and the seed of every model trained on it.
* **Runs**, each on this machine, on every (world, seed) cell: ``h2crop baseline --model rf`` and
  ``--model svm`` (the window's S2 months + EnMAP per pixel), and ``h2crop train`` with defaults (no
  ``--lr``, no ``--epochs``: the recipe ``auto`` picks), one worker with every core, stopped by
  ``--time-budget-minutes``, per deep variant; the best checkpoint is scored on the test split.
* **Table**: per run and level, the mean ± standard deviation of test OA and mF1 over the worlds × seeds.
  **Check**: a deep variant beats a baseline at level 4 when its mean exceeds the baseline's by more than
  the larger of the two standard deviations, for OA and for mF1.

Deep variants (``--variants``): ``faithful`` (the preset as published, the defaults), ``pixel``
(``--set pixel_branch=32``: each pixel's own S2 series and EnMAP spectrum, encoded without spatial mixing,
concatenated to the fused features), ``pixel-logits`` (that branch with its own per-level classifier whose
logits are added to the heads') and ``pixel-spectrum`` (that classifier, 64 wide, on the EnMAP spectrum
alone, with Gaussian input noise and its own loss: ``pixel_inputs=enmap pixel_noise=1 pixel_loss=1``).

Every cell's results are written as it finishes (``cells/w{W}-s{S}.json`` under ``--keep``): a rerun with
the same ``--keep`` goes on where it stopped. JSON to ``benchmarks/results/small_data.json``.

    python benchmarks/small_data.py [--worlds 3] [--seeds 3] [--world-kind prosail] [--tiles 32] \\
        [--minutes 15] [--label-fraction 0.1] [--variants faithful] [--keep DIR] [--smoke]

``--smoke``: one world, one seed, 8 tiles, a 6-second budget, the last variant asked for, small pixel
samples (checks that it runs; the numbers mean nothing at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
LEVELS = ("level1", "level2", "level3", "level4")


def test_scores(metrics: dict) -> dict:
    """Per-level test OA and mF1 of a ``metrics.json`` payload."""
    return {level: {"oa": values["oa"], "mf1": values["mf1"]} for level, values in metrics["levels"].items()}


def run_baseline(root: Path, work: Path, model: str, seed: int, max_pixels: int | None, quiet: bool) -> dict:
    from pipelines.settings import BaselineSettings
    from pipelines.training.baseline import run_baseline as fit_baseline

    started = time.perf_counter()
    settings = BaselineSettings(
        model=model,
        window=PRESET.rsplit("_", 1)[-1],
        max_pixels=max_pixels,
        seed=seed,
        tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
        run_name=f"baseline-{model}",
    )
    outcome = fit_baseline(settings, root, work / f"baseline-{model}", progress=not quiet)
    return {
        "seconds": time.perf_counter() - started,
        "fit_seconds": outcome.summary["fit_seconds"],
        "train_pixels": outcome.summary["train_pixels"],
        "test": test_scores(outcome.metrics),
    }


def run_deep(root: Path, work: Path, variant: str, seed: int, minutes: float, quiet: bool) -> dict:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics
    from pipelines.settings import TrainSettings
    from pipelines.training.train import run_training

    started = time.perf_counter()
    settings = TrainSettings(  # the defaults, but for where it runs: one worker with every core, a time budget
        data=str(root),
        preset=PRESET,
        overrides=dict(VARIANTS[variant]),
        seed=seed,
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
    return {
        "seconds": trained,
        "epochs": outcome.epochs_done,
        "best_epoch": outcome.best_metrics.get("epoch"),
        "best_val_mf1": outcome.best_metrics.get("val_mf1"),
        "test": test_scores(build_metrics(evaluation.confusion, "test")),
    }


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


def run_cell(work: Path, world: int, seed: int, args: argparse.Namespace) -> dict:
    """One (world, seed) cell: its data, the baselines and the deep variants; written to ``cells/`` at the
    end, and read back instead of run again when it is there."""
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.files import write_text_atomic

    done = work / "cells" / f"w{world}-s{seed}.json"
    if done.is_file():
        print(f"world {world} seed {seed}: done before ({done})", flush=True)
        return json.loads(done.read_text())
    cell_dir = work / f"w{world}-s{seed}"
    root = cell_dir / "data"
    if not (root / "data_lists").is_dir():
        synthesize_dataset(
            root,
            args.tiles,
            seed=1000 * world + seed,  # the samples: another draw in every cell
            world_seed=world,
            world=args.world_kind,
            spec=SampleSpec(size=96),
            region_size=None,
            label_fraction=args.label_fraction,
            progress=False,
        )
    labelled = {split: count_parcels(root, split) for split in ("train", "val", "test")}
    runs = {}
    for model in args.baselines:
        runs[f"baseline {model}"] = run_baseline(root, cell_dir, model, seed, args.max_pixels, args.smoke)
    for variant in args.variants:
        runs[f"deep {variant}"] = run_deep(root, cell_dir, variant, seed, args.minutes, args.smoke)
    line = ", ".join(
        f"{name} {r['test']['level4']['oa']:.3f}/{r['test']['level4']['mf1']:.3f}" for name, r in runs.items()
    )
    print(f"world {world} seed {seed} (L4 OA/mF1): {line}; {labelled['test']['parcels']} test parcels", flush=True)
    cell = {"world": world, "seed": seed, "labelled": labelled, "runs": runs}
    write_text_atomic(done, json.dumps(cell, indent=1))
    return cell


def summarise(cells: list[dict]) -> dict:
    """Per run and level: mean and standard deviation (0 for a single cell) of test OA and mF1 over the cells."""
    summary: dict[str, dict] = {}
    for name in cells[0]["runs"]:
        summary[name] = {}
        for level in LEVELS:
            for metric in ("oa", "mf1"):
                values = [cell["runs"][name]["test"][level][metric] for cell in cells]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                summary[name][f"{level}_{metric}"] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return summary


def beats(summary: dict, deep: str, baseline: str, key: str) -> tuple[bool, float, float]:
    """Whether ``deep``'s mean exceeds ``baseline``'s by more than the larger standard deviation: (holds,
    margin, that standard deviation)."""
    a, b = summary[deep][key], summary[baseline][key]
    spread = max(a["std"], b["std"])
    margin = a["mean"] - b["mean"]
    return margin > spread, margin, spread


def print_table(summary: dict) -> None:
    width = max(map(len, summary)) + 2
    print(
        f"\n{'mean ± std over worlds × seeds':<{width}}"
        + "".join(f"{'L' + lv[-1] + ' OA':>14}" for lv in LEVELS)
        + "".join(f"{'L' + lv[-1] + ' mF1':>14}" for lv in LEVELS)
    )
    for name, row in summary.items():
        cells = [row[f"{lv}_{m}"] for m in ("oa", "mf1") for lv in LEVELS]
        print(f"{name:<{width}}" + "".join(f"{c['mean']:>8.3f} ±{c['std']:.3f}" for c in cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=3, help="generated worlds (seeds 0..N-1)")
    parser.add_argument("--seeds", type=int, default=3, help="labelled-set draws and model seeds per world")
    parser.add_argument("--world-kind", default="prosail", choices=("prosail", "drawn"), help="h2crop synth --world")
    parser.add_argument("--tiles", type=int, default=32, help="generated 96-px tiles per cell (16-32: a small survey)")
    parser.add_argument("--label-fraction", type=float, default=0.1, help="about this fraction of parcels labelled")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each deep run")
    parser.add_argument("--variants", nargs="+", default=["faithful"], choices=list(VARIANTS))
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--keep", type=Path, help="keep data, runs and finished cells here (a rerun goes on)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "small_data.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()
    args.max_pixels = None
    if args.smoke:
        args.worlds, args.seeds, args.tiles, args.minutes = 1, 1, 8, 0.1
        args.variants, args.max_pixels = args.variants[-1:], 500
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        cells = [run_cell(work, w, s, args) for w in range(args.worlds) for s in range(args.seeds)]
    summary = summarise(cells)
    print_table(summary)
    checks = {}
    for deep in (name for name in summary if name.startswith("deep")):
        for baseline in (name for name in summary if name.startswith("baseline")):
            for key in ("level4_oa", "level4_mf1"):
                holds, margin, spread = beats(summary, deep, baseline, key)
                checks[f"{deep} beats {baseline} at {key} by more than one std"] = holds
                print(f"{'PASS' if holds else 'FAIL'}  {deep} vs {baseline}, {key}: {margin:+.3f} (std {spread:.3f})")
    results = {
        "protocol": {
            "worlds": args.worlds,
            "seeds": args.seeds,
            "world_kind": args.world_kind,
            "tiles": args.tiles,
            "label_fraction": args.label_fraction,
            "minutes": args.minutes,
            "preset": PRESET,
            "cpus": os.cpu_count(),
        },
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "checks": checks,
        "cells": cells,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
