"""Transfer to a new region: a small labelled set from ``h2crop prepare``, trained from scratch against fine-tuned
from a model of another region, with the same time budget.

Two regions of one generated world that differ as regions do:

* region A: the world as generated; its full training set (``--a-samples`` tiles of 96 px, the benchmark's
  layout);
* region B: the same classes, but other class frequencies (the leaves' frequencies shuffled), a phenology one
  month later (every class's S2 curve shifted by a month: a later spring), and other parcels (another seed); a
  ``--b-size`` px region with its parcel registers (national codes, a crosswalk), cut by ``h2crop prepare``
  into 96-px tiles in spatial blocks of one tile, ``--b-split`` of them for training (a small labelled set),
  the rest for validation and test.

Then, each with one worker on every core: a model trained on A (``--a-minutes``); on B, a model trained from
scratch and one fine-tuned from A's checkpoint (``train --init``), each for ``--b-minutes``; every model scored
on B's test blocks per level (OA and mF1, the benchmark's metrics), A's model also without fine-tuning.
Target: fine-tuning beats scratch at every level.

    python benchmarks/transfer.py [--a-samples 64] [--a-minutes 4] [--b-size 576] [--b-minutes 2] [--smoke]

``--smoke``: tiny sizes, region A's model untrained, one epoch on B, to check that it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

PRESET = "tiny_crops_S2_H_P_jun"
LEVELS = ("level1", "level2", "level3", "level4")


def region_b_world(world, seed: int):
    """Region B's world: A's classes with the leaves' frequencies shuffled and the S2 phenology a month later."""
    rng = np.random.default_rng(seed)
    frequency = world.frequency.copy()
    frequency[1:] = rng.permutation(frequency[1:])
    s2 = world.s2_variants.copy()
    s2[:, :, 1:] = world.s2_variants[:, :, :-1]  # each month looks like the month before in A
    return dataclasses.replace(world, frequency=frequency, s2_variants=s2)


def make_data(work: Path, args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """Region A's dataset and region B's prepared one (with their normalisation statistics)."""
    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.stats import compute_norm_stats
    from h2crop_core.data.synth import SyntheticWorld, generate_taxonomy, synthesize_dataset, synthesize_region
    from pipelines.preparing.run import prepare_dataset
    from pipelines.settings import PrepareSettings

    spec = SampleSpec(size=args.tile)
    taxonomy = generate_taxonomy((4, 10, 16, 20), seed=11)
    root_a, region_b, root_b = work / "region_a", work / "region_b_rasters", work / "region_b"
    synthesize_dataset(root_a, args.a_samples, seed=0, taxonomy=taxonomy, spec=spec, region_size=None, progress=False)
    world_b = region_b_world(SyntheticWorld.create(taxonomy, spec, seed=0), seed=args.b_seed)
    synthesize_region(region_b, world_b, size=args.b_size, seed=args.b_seed, progress=False)
    started = time.perf_counter()
    report = prepare_dataset(
        PrepareSettings(
            s2=str(region_b / "s2.tif"),
            enmap=str(region_b / "enmap.tif"),
            parcels=str(region_b / "parcels.gpkg"),
            code_column="CODE_CULTU",
            crosswalk=str(region_b / "crosswalk.csv"),
            prior_parcels=str(region_b / "parcels_prior.gpkg"),
            taxonomy=str(root_a / "cascade_labels.csv"),
            output=str(root_b),
            tile=args.tile,
            block=args.tile * 10 / 1000,
            split=tuple(args.b_split),
            outside="background",
            ray=False,
        ),
        progress=False,
    )
    prepare_s = time.perf_counter() - started
    for root in (root_a, root_b):
        index = DatasetIndex(root)
        compute_norm_stats(index.split_paths("train"), spec=spec, progress=False).to_json(index.norm_stats_path)
    return root_a, root_b, {"prepare_seconds": prepare_s, "tiles": report["tiles"], "area_km2": report["area_km2"]}


def train_settings(data: Path, work: Path, name: str, minutes: float, init: str = ""):
    from h2crop_core.recipe import SMALL
    from pipelines.settings import TrainSettings

    return TrainSettings(
        data=str(data),
        preset=PRESET,
        # the small recipe's model in every run, given: a fine-tuned run keeps its checkpoint's model (the recipe
        # adds nothing to --init), and scratch against fine-tuned compares one model
        overrides=dict(SMALL.model),
        workers=1,
        cpus_per_worker=float(os.cpu_count() or 1),
        epochs=None if minutes else 1,  # --smoke: one epoch, a pass over B's few tiles (not the small recipe's
        recipe="auto" if minutes else "benchmark",  # 128 draws an epoch)
        time_budget_minutes=minutes,
        init=init,
        run_name=name,
        storage=str(work / "storage"),
        output=str(work / "runs" / name),
        tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
    )


def train(
    data: Path, work: Path, name: str, minutes: float, init: str = "", quiet: bool = True
) -> tuple[Path, int, float]:
    """A run's best checkpoint, its epochs and seconds."""
    from pipelines.training.train import run_training

    started = time.perf_counter()
    outcome = run_training(train_settings(data, work, name, minutes, init), progress=not quiet)
    return outcome.best_checkpoint, outcome.epochs_done, time.perf_counter() - started


def untrained(data: Path, work: Path) -> tuple[Path, int, float]:
    """--smoke: region A's model as initialised (each Ray Train run costs ~25 s of start-up on a 2-core
    machine; the smoke checks the script, and the two runs on B go through Train)."""
    from h2crop_core.checkpoint import save_checkpoint
    from h2crop_core.models import DualStreamModel
    from pipelines.training.context import model_config_for, prepare_dataset

    context = prepare_dataset(data, progress=False)
    config = model_config_for(train_settings(data, work, "region-a", 0), context.taxonomy, context.spec)
    path = work / "runs" / "region-a" / "best.ckpt"
    save_checkpoint(path, DualStreamModel(config), config, context.taxonomy, context.stats, spec=context.spec)
    return path, 0, 0.0


def score(checkpoint: Path, data: Path) -> dict:
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics

    evaluation = evaluate_checkpoint(checkpoint, data, "test", progress=False, loader_workers=0)
    metrics = build_metrics(evaluation.confusion, "test")
    return {lv: {k: metrics["levels"][lv][k] for k in ("oa", "mf1")} for lv in LEVELS}


def print_table(rows: dict[str, dict]) -> None:
    width = max(map(len, rows)) + 2
    head = "".join(f"{'L' + lv[-1] + ' OA':>8}" for lv in LEVELS) + "".join(
        f"{'L' + lv[-1] + ' mF1':>8}" for lv in LEVELS
    )
    print(f"\n{'on region B test blocks':<{width}}{'seconds':>8}{'epochs':>7}{head}")
    for name, row in rows.items():
        test = row["test"]
        print(
            f"{name:<{width}}{row['seconds']:>8.0f}{row['epochs']:>7}"
            + "".join(f"{test[lv]['oa']:>8.3f}" for lv in LEVELS)
            + "".join(f"{test[lv]['mf1']:>8.3f}" for lv in LEVELS)
        )


def run(args: argparse.Namespace, work: Path) -> dict:
    root_a, root_b, prepared = make_data(work, args)
    print(
        f"region B prepared: {prepared['tiles']['written']} tiles of {args.tile} px in {prepared['prepare_seconds']:.1f} s "
        f"({prepared['prepare_seconds'] / prepared['area_km2']:.2f} s/km²)",
        flush=True,
    )
    model_a, epochs, seconds = (
        untrained(root_a, work) if args.smoke else train(root_a, work, "region-a", args.a_minutes)
    )
    rows = {"A's model, not fine-tuned": {"seconds": seconds, "epochs": epochs, "test": score(model_a, root_b)}}
    for name, init in (("B from scratch", ""), ("B fine-tuned from A", str(model_a))):
        best, epochs, seconds = train(root_b, work, name.replace(" ", "-"), args.b_minutes, init, quiet=args.smoke)
        rows[name] = {"seconds": seconds, "epochs": epochs, "test": score(best, root_b)}
        print(f"{name}: level-4 mF1 {rows[name]['test']['level4']['mf1']:.3f} after {epochs} epochs", flush=True)
    return {"prepared": prepared, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-samples", type=int, default=64, help="region A's training set, tiles of --tile px")
    parser.add_argument("--a-minutes", type=float, default=4.0, help="training budget on region A")
    parser.add_argument("--b-size", type=int, default=576, help="region B's side in px (a multiple of --tile)")
    parser.add_argument(
        "--b-seed", type=int, default=1, help="region B: its class frequencies' shuffle and its parcels (another B)"
    )
    parser.add_argument("--b-split", type=float, nargs=3, default=[0.25, 0.15, 0.6], help="region B's split fractions")
    parser.add_argument("--b-minutes", type=float, default=2.0, help="training budget of each run on region B")
    parser.add_argument("--tile", type=int, default=96, help="tile side in px")
    parser.add_argument("--keep", type=Path, help="keep the data and runs here instead of a temporary folder")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "transfer.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.a_samples, args.a_minutes, args.b_size, args.b_minutes, args.tile = 6, 0, 288, 0, 96
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        result = run(args, work)
    rows = result["rows"]
    print_table(rows)
    scratch, tuned = rows["B from scratch"]["test"], rows["B fine-tuned from A"]["test"]
    checks = {f"fine-tuned beats scratch at {lv} (mF1)": tuned[lv]["mf1"] > scratch[lv]["mf1"] for lv in LEVELS}
    checks |= {f"fine-tuned beats scratch at {lv} (OA)": tuned[lv]["oa"] > scratch[lv]["oa"] for lv in LEVELS}
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"settings": settings, "preset": PRESET, "cpus": os.cpu_count(), **result, "checks": checks}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
