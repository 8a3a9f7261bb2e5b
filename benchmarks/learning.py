"""Learning, not just running: tiny presets trained on a generated dataset under the same time budget.

Trains ``tiny_crops_S2_H_P_jun``, ``tiny_crops_S2_H_jun`` and ``tiny_crops_S2_jun`` with h2crop's Ray
training (2 workers) for the same wall-clock budget each, then evaluates each best checkpoint on the test
split. Checks: S2+H+P reaches level-1 mF1 >= 0.8; S2+H beats S2 alone at level 4 (the hyperspectral stream
helps at the fine levels). Not part of `make test`: it takes about half an hour.

    python benchmarks/learning.py [--samples 320] [--minutes 10] [--data ROOT] [--smoke]

``--smoke``: one preset, 8 generated 96-px samples, one epoch (checks that it runs; the checks
are printed but mean nothing at that size).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PRESETS = ("tiny_crops_S2_H_P_jun", "tiny_crops_S2_H_jun", "tiny_crops_S2_jun")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset root (default: generate one)")
    parser.add_argument("--samples", type=int, default=320, help="samples to generate (>= 256)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per preset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--keep", type=Path, help="keep the generated data and runs here instead of a temporary folder")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "learning.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()

    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.synth import synthesize_dataset
    from h2crop_core.evaluation import evaluate_checkpoint
    from h2crop_core.report import build_metrics
    from pipelines.settings import TrainSettings
    from pipelines.training.train import run_training

    spec = SampleSpec(size=96) if args.smoke else SampleSpec()
    if args.smoke:
        args.samples, args.minutes, args.presets = 8, 0.25, args.presets[:1]

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        root = args.data or work / "data"
        if args.data is None and not (root / "data_lists").is_dir():
            synthesize_dataset(root, args.samples, seed=0, spec=spec, region_size=None, progress=not args.smoke)
        results = {
            "minutes_per_preset": args.minutes,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "presets": {},
        }
        for preset in args.presets:
            started = time.perf_counter()
            settings = TrainSettings(
                data=str(root),
                preset=preset,
                epochs=1 if args.smoke else 1000,
                batch_size=args.batch_size,
                lr=args.lr,
                warmup_iters=0,
                workers=args.workers,
                run_name=f"learning-{preset}-{int(time.time())}",
                storage=str(work / "storage"),
                output=str(work / "runs" / preset),
                tracking_uri=f"sqlite:///{work / 'mlruns.db'}",
                time_budget_minutes=args.minutes,
            )
            outcome = run_training(settings, progress=not args.smoke)
            evaluation = evaluate_checkpoint(
                outcome.best_checkpoint, root, "test", decode="argmax", progress=False, loader_workers=1
            )
            metrics = build_metrics(evaluation.confusion, "test")
            results["presets"][preset] = {
                "epochs": outcome.epochs_done,
                "wall_seconds": time.perf_counter() - started,
                "best_val_mf1": outcome.best_metrics.get("val_mf1"),
                "test_mf1": {level: values["mf1"] for level, values in metrics["levels"].items()},
                "test_mean_mf1": metrics["mean"]["mf1"],
            }
            print(
                f"{preset}: {outcome.epochs_done} epochs, test mF1 per level "
                + " ".join(f"{v:.3f}" for v in results["presets"][preset]["test_mf1"].values()),
                flush=True,
            )

    presets = results["presets"]
    print(f"\n{'preset':<26}{'epochs':>7}{'L1 mF1':>8}{'L2 mF1':>8}{'L3 mF1':>8}{'L4 mF1':>8}{'mean':>8}")
    for preset, r in presets.items():
        levels = r["test_mf1"]
        print(
            f"{preset:<26}{r['epochs']:>7}"
            + "".join(f"{levels[f'level{k}']:>8.3f}" for k in range(1, 5))
            + f"{r['test_mean_mf1']:>8.3f}"
        )
    checks = {}
    if "tiny_crops_S2_H_P_jun" in presets:
        checks["S2_H_P level1 mF1 >= 0.8"] = presets["tiny_crops_S2_H_P_jun"]["test_mf1"]["level1"] >= 0.8
    if {"tiny_crops_S2_H_jun", "tiny_crops_S2_jun"} <= set(presets):
        checks["S2_H beats S2 at level 4"] = (
            presets["tiny_crops_S2_H_jun"]["test_mf1"]["level4"] > presets["tiny_crops_S2_jun"]["test_mf1"]["level4"]
        )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    results["checks"] = checks
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
