"""Small labelled sets: the deep model with its defaults against per-pixel classical baselines, over several
generated worlds and several sample draws, so that one lucky set cannot decide.

Protocol (``docs/benchmarks.md``, "Small labelled sets"):

* **Worlds**: ``--worlds`` generated worlds (``h2crop synth --world prosail`` by default: each a taxonomy and
  class spectra from PROSPECT-D + 4SAIL driven by per-class phenology; world ``w`` has seed ``w``).
* **Seeds**: in each world, ``--seeds`` draws of a labelled set and the seed of every model trained on it.
* **Labels** (``--protocol``): ``survey`` (the default): about ``--label-fraction`` (10%) of the parcels
  labelled, unevenly over ``--tiles`` tiles of 96 px, and other tiles scored: new fields, as a map meets
  them. ``scene``: every tile densely labelled, 10% of each tile's labelled pixels for training, 5% for
  validation and the other 85% scored (the held-out real scene's protocol: the scored pixels lie in the
  trained fields). ``--gaps G``: bare soil shows through the canopy within fields (``h2crop synth --gaps``),
  as in the real scenes whose early-season stands cover part of the ground.
* **Runs**, each on this machine, on every (world, seed) cell: ``h2crop baseline --model rf`` and
  ``--model svm`` (the window's S2 months + EnMAP per pixel), and ``h2crop train`` with defaults (no
  ``--lr``, no ``--epochs``: the recipe ``auto`` picks), one worker with every core, stopped by
  ``--time-budget-minutes``, per deep variant; the best checkpoint is scored on the test split.
* **Table**: per run and level, the mean ± standard deviation of test OA and mF1 over the worlds × seeds;
  per cell, the share of scored level-4 pixels whose class has a training label (no model trained on the
  set can score above it: with 10% of a few hundred fields, well below 1).
  **Check**: a deep variant beats a baseline at level 4 when its mean exceeds the baseline's by more than
  the larger of the two standard deviations, for OA and for mF1.

Deep variants (``--variants``): ``faithful`` (``h2crop train`` as a user runs it: the preset as published
with the recipe's defaults; the small recipe adds its per-pixel classifier, as ``pixel-logits``),
``no-pixel`` (the preset alone under the small recipe, ``--set pixel_branch=0``: the defaults before
2026-12-06), ``spectral`` (the defaults with spectral augmentation, ``--spectral-jitter 0.08``), ``pixel``
(``--set pixel_branch=32``: each pixel's own S2 series and EnMAP spectrum, encoded without spatial mixing,
concatenated to the fused features), ``pixel-logits`` (that branch, 64 wide, with its own per-level
classifier whose logits are added to the heads', trained on its own loss too) and ``pixel-spectrum`` (that
classifier on the EnMAP spectrum alone, with Gaussian input noise).

Every cell's results are written as it finishes (``cells/{protocol}[-g{G}]-w{W}-s{S}.json`` under ``--keep``):
a rerun with the same ``--keep`` goes on where it stopped. Each deep run records the model settings it added
to the preset (``model``); cells written before 2026-12-06 lack them, and their ``faithful`` is the preset
alone. JSON to ``benchmarks/results/small_data.json``.

    python benchmarks/small_data.py [--worlds 3] [--seeds 3] [--world-kind prosail] [--protocol survey] \\
        [--tiles 32] [--minutes 15] [--label-fraction 0.1] [--gaps 0] [--variants faithful] [--keep DIR] [--smoke]

``--smoke``: one world, one seed, 8 tiles, one training pass (not the small recipe's epochs), the last
variant asked for, small pixel samples (checks that it runs; the numbers mean nothing at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from h2crop_core.recipe import SMALL_MODEL

PRESET = "tiny_crops_S2_H_jun"
#: the small recipe's per-pixel classifier, set explicitly (the variants that compare it name it)
PIXEL_LOGITS = dict(SMALL_MODEL)
#: the deep variants: model overrides (--set) on top of the preset, and training settings other than the
#: defaults; ``faithful`` is ``h2crop train`` as a user runs it (the preset as published, the recipe's defaults)
VARIANTS: dict[str, dict] = {
    "faithful": {},
    "no-pixel": {"set": {"pixel_branch": 0}},
    "spectral": {"train": {"spectral_jitter": 0.08}},
    "pixel": {"set": {"pixel_branch": 32}},
    "pixel-logits": {"set": PIXEL_LOGITS},
    "pixel-spectrum": {"set": {**PIXEL_LOGITS, "pixel_inputs": "enmap", "pixel_noise": 1.0}},
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


#: --smoke trains one pass over the few tiles (the benchmark recipe around a given lr, with the small recipe's
#: model) instead of the small recipe's 32-step epoch: the smoke checks the script, and the epoch was most of
#: its time
SMOKE_TRAIN = {"recipe": "benchmark", "lr": 2e-3, "epochs": 1}


def run_deep(root: Path, work: Path, variant: str, seed: int, minutes: float, smoke: bool) -> dict:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.recipe import SMALL, recipe_model
    from h2crop_core.report import build_metrics
    from pipelines.settings import TrainSettings
    from pipelines.training.train import run_training

    started = time.perf_counter()
    overrides = dict(VARIANTS[variant].get("set", {}))
    model = {**recipe_model(SMALL, overrides), **overrides}  # what the small recipe trains (sets of < 2,000 tiles)
    settings = TrainSettings(  # the defaults, but for where it runs: one worker with every core, a time budget
        data=str(root),
        preset=PRESET,
        overrides=model if smoke else overrides,  # --smoke: the benchmark recipe, with the small recipe's model
        seed=seed,
        workers=1,
        cpus_per_worker=float(os.cpu_count() or 1),
        time_budget_minutes=minutes,
        run_name=f"deep-{variant}",
        storage=str(work / "storage"),
        output=str(work / "runs" / variant),
        tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
        **VARIANTS[variant].get("train", {}),
        **(SMOKE_TRAIN if smoke else {}),
    )
    outcome = run_training(settings, progress=not smoke)
    trained = time.perf_counter() - started
    evaluation = evaluate_checkpoint(outcome.best_checkpoint, root, "test", progress=False, loader_workers=0)
    return {
        "seconds": trained,
        "model": model,
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


#: the scene protocol's shares of each tile's labelled pixels: train, val (the rest is test)
SCENE_SHARES = (0.10, 0.05)


def scene_split(dense: Path, root: Path, seed: int, shares: tuple[float, float] = SCENE_SHARES) -> None:
    """The held-out scene's protocol on a densely labelled generated set: every tile is written once per split
    with its own random share of the labelled pixels (10% train, 5% val, 85% test), so that the test pixels
    lie in the same parcels as the training ones, as in the classic hyperspectral scenes (10% of the pixels
    of one scene labelled, the rest scored)."""
    import h5py
    import numpy as np

    from h2crop_core.data.index import H5_DIR, LIST_DIRS, SPLITS, DatasetIndex
    from h2crop_core.data.synth.samples import h5_bytes
    from h2crop_core.files import write_if_changed, write_text_atomic
    from h2crop_core.taxonomy import TAXONOMY_FILENAME, UNLABELLED

    index = DatasetIndex(dense)
    paths = sorted(p for split in SPLITS for p in index.split_paths(split))
    (root / H5_DIR).mkdir(parents=True, exist_ok=True)
    for name in (TAXONOMY_FILENAME, "input_contract.json"):
        write_if_changed(root / name, (dense / name).read_bytes())
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    for number, path in enumerate(paths):
        with h5py.File(path, "r") as handle:
            arrays = {key: handle[key][()] for key in handle}
        key = next(k for k in arrays if k.lower().startswith("label"))
        draw = np.random.default_rng([seed, number]).random(arrays[key].shape[-2:])
        bounds = {"train": (0, shares[0]), "val": (shares[0], sum(shares)), "test": (sum(shares), 1.01)}
        for split, (lo, hi) in bounds.items():
            label = arrays[key].copy()
            label[:, (draw < lo) | (draw >= hi)] = UNLABELLED
            name = f"{Path(path).stem}-{split}"
            write_if_changed(root / H5_DIR / f"{name}.h5", h5_bytes({**arrays, key: label}))
            lists[split].append(name)
    for split, names in lists.items():
        write_text_atomic(root / LIST_DIRS[0] / f"{split}.txt", "".join(f"{n}\n" for n in names))


def seen_share(root: Path) -> float:
    """The share of the test split's labelled level-4 pixels whose class has a training label: the highest
    level-4 OA any model trained on this set can reach (with few labelled parcels, well below 1)."""
    import numpy as np

    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.reader import infer_dataset_spec, read_sample
    from h2crop_core.taxonomy import UNLABELLED

    index = DatasetIndex(root)

    def leaf_counts(split: str):
        paths = index.split_paths(split)
        spec = infer_dataset_spec(paths)
        leaves = [read_sample(p, modalities=("label",), spec=spec)["label"][3] for p in paths]
        values = np.concatenate([leaf[leaf != UNLABELLED].ravel() for leaf in leaves])
        return np.bincount(values, minlength=256)

    train, test = leaf_counts("train"), leaf_counts("test")
    return float(test[train > 0].sum() / max(1, test.sum()))


def make_cell_data(cell_dir: Path, world: int, seed: int, args: argparse.Namespace) -> Path:
    """The cell's dataset root under ``--protocol`` (generated once; reused by a rerun)."""
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.synth import synthesize_dataset

    root = cell_dir / "data"
    if (root / "data_lists").is_dir():
        return root
    scene = args.protocol == "scene"
    target = cell_dir / "dense" if scene else root
    synthesize_dataset(
        target,
        args.tiles,
        seed=1000 * world + seed,  # the samples: another draw in every cell
        world_seed=world,
        world=args.world_kind,
        spec=SampleSpec(size=96),
        region_size=None,
        label_fraction=1.0 if scene else args.label_fraction,
        progress=False,
        gaps=args.gaps,
    )
    if scene:
        staging = cell_dir / "data.partial"
        scene_split(target, staging, seed)
        staging.rename(root)  # whole or not at all: a killed split is redone
    return root


def cell_name(args: argparse.Namespace, world: int, seed: int) -> str:
    """A cell's folder and file name: its protocol, bare-soil share (where there is any), world and seed."""
    gaps = f"-g{args.gaps:g}" if args.gaps else ""
    return f"{args.protocol}{gaps}-w{world}-s{seed}"


def run_cell(work: Path, world: int, seed: int, args: argparse.Namespace) -> dict:
    """One (world, seed) cell: its data, the baselines and the deep variants asked for. The cell is written
    to ``cells/`` after every run, and a rerun runs only what it lacks (a variant added later, or the runs a
    killed benchmark had not finished)."""
    from h2crop_core.files import write_text_atomic

    done = work / "cells" / f"{cell_name(args, world, seed)}.json"
    cell = json.loads(done.read_text()) if done.is_file() else None
    wanted = [f"baseline {m}" for m in args.baselines] + [f"deep {v}" for v in args.variants]
    if cell is not None and all(name in cell["runs"] for name in wanted):
        print(f"world {world} seed {seed}: done before ({done})", flush=True)
        return cell
    cell_dir = work / cell_name(args, world, seed)
    root = make_cell_data(cell_dir, world, seed, args)
    if cell is None:
        labelled = {split: count_parcels(root, split) for split in ("train", "val", "test")}
        labelled["test_seen_share"] = seen_share(root)
        cell = {"world": world, "seed": seed, "labelled": labelled, "runs": {}}
    for name in (name for name in wanted if name not in cell["runs"]):
        kind, which = name.split(" ", 1)
        if kind == "baseline":
            cell["runs"][name] = run_baseline(root, cell_dir, which, seed, args.max_pixels, args.smoke)
        else:
            cell["runs"][name] = run_deep(root, cell_dir, which, seed, args.minutes, args.smoke)
        write_text_atomic(done, json.dumps(cell, indent=1))
    line = ", ".join(
        f"{name} {cell['runs'][name]['test']['level4']['oa']:.3f}/{cell['runs'][name]['test']['level4']['mf1']:.3f}"
        for name in wanted
    )
    labelled = cell["labelled"]
    scored = f"{labelled['test']['parcels']} test parcels, " if args.protocol == "survey" else ""
    print(
        f"world {world} seed {seed} (L4 OA/mF1): {line}; {scored}{labelled['test_seen_share']:.3f} of the test "
        "pixels of a class with training labels",
        flush=True,
    )
    return cell


def summarise(cells: list[dict], names: list[str]) -> dict:
    """Per run of ``names`` and level: mean and standard deviation (0 for a single cell) of test OA and mF1
    over the cells."""
    summary: dict[str, dict] = {}
    for name in names:
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
    parser.add_argument(
        "--protocol",
        default="survey",
        choices=("survey", "scene"),
        help="scene: 10%% of every tile's pixels labelled, the other pixels of the same tiles scored (the held-out "
        "real scene's protocol); survey: about --label-fraction of the parcels labelled, other tiles scored",
    )
    parser.add_argument(
        "--label-fraction", type=float, default=0.1, help="survey: about this fraction of parcels labelled"
    )
    parser.add_argument(
        "--gaps", type=float, default=0.0, help="prosail worlds: mean share of bare soil within fields (h2crop synth)"
    )
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
    summary = summarise(cells, [f"baseline {m}" for m in args.baselines] + [f"deep {v}" for v in args.variants])
    print_table(summary)
    shares = [cell["labelled"]["test_seen_share"] for cell in cells if "test_seen_share" in cell["labelled"]]
    ceiling = statistics.fmean(shares) if shares else None
    if ceiling is not None:
        print(f"level-4 OA ceiling (test pixels of a class with training labels): {ceiling:.3f} on average")
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
            "protocol": args.protocol,
            "label_fraction": args.label_fraction if args.protocol == "survey" else None,
            "gaps": args.gaps,
            "scene_shares": SCENE_SHARES if args.protocol == "scene" else None,
            "minutes": args.minutes,
            "preset": PRESET,
            "cpus": os.cpu_count(),
        },
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "level4_oa_ceiling": ceiling,
        "checks": checks,
        "cells": cells,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
