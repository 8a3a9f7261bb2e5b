"""`make demo`: the main job end to end on this machine, with a generated dataset.

synthesise (with the region's rasters as a user has them: monthly S2 files, EnMAP in another UTM zone,
parcels in Lambert-93) -> validate -> stats -> train ``tiny_crops_S2_H_P_jun`` on a local Ray with 2 workers
(MLflow tracking) -> evaluate the best checkpoint on the test split -> map the user's rasters to
Cloud-Optimized GeoTIFFs of classes and confidence with a Ray Data actor pool -> the crop of every parcel to
GeoParquet -> sweep ``tune_spaces/quick.yaml`` (4 trials, ASHA) on a small dataset and compare the trials.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipelines.cli.main import main as h2crop

QUICK_SPACE = Path(__file__).resolve().parents[1] / "tune_spaces" / "quick.yaml"


def step(title: str, argv: list[str], verbose: bool = False) -> None:
    print(f"\n=== {title}\n$ h2crop {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = h2crop(argv + (["--verbose"] if verbose else []))
    if code != 0:
        print(f"demo: step '{title}' failed with exit code {code}", file=sys.stderr)
        sys.exit(code)
    print(f"({time.perf_counter() - start:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="where the demo writes (default: demo_output/)"
    )
    parser.add_argument("--samples", type=int, default=96, help="generated samples (default 96)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    parser.add_argument("--preset", default="tiny_crops_S2_H_P_jun")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' own log lines")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    data, run = out / "data", out / "run"
    user = data / "user_files"
    start = time.perf_counter()
    step(
        "1/9 synthesise a dataset with the benchmark's layout, and a georeferenced region as a user has it",
        ["synth", "--out", str(data), "--samples", str(args.samples), "--user-files"],
        args.verbose,
    )
    step("2/9 validate every file against the layout and the taxonomy", ["validate", "--data", str(data)], args.verbose)
    step("3/9 per-band normalisation statistics over the training split", ["stats", "--data", str(data)], args.verbose)
    step(
        f"4/9 train {args.preset} on a local Ray: 2 workers, MLflow tracking, a checkpoint per epoch",
        [
            "train",
            "--data",
            str(data),
            "--preset",
            args.preset,
            "--epochs",
            str(args.epochs),
            "--workers",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "2e-3",
            "--warmup-iters",
            "0",
            "--run-name",
            f"demo-{args.preset}",
            "--storage",
            str(out / "ray_results"),
            "--output",
            str(run),
            "--tracking-uri",
            f"sqlite:///{out / 'mlruns.db'}",
        ],
        args.verbose,
    )
    step(
        "5/9 evaluate the best checkpoint on the test split (hierarchy-consistent decoding)",
        [
            "evaluate",
            "--checkpoint",
            str(run / "best.ckpt"),
            "--data",
            str(data),
            "--split",
            "test",
            "--output",
            str(out / "test_eval"),
            "--decode",
            "consistent",
        ],
        args.verbose,
    )
    step(
        "6/9 map the user's rasters (12 monthly S2 files; EnMAP in EPSG:32632, warped on the fly): classes and confidence as COGs",
        [
            "map",
            "--checkpoint",
            str(run / "best.ckpt"),
            "--s2",
            str(user / "s2"),
            "--enmap",
            str(user / "enmap_EPSG32632.tif"),
            "--prior",
            str(user / "prior.tif"),
            "--output",
            str(out / "map"),
            "--actors",
            "2",
        ],
        args.verbose,
    )
    step(
        "7/9 the crop of every parcel (Lambert-93 GeoPackage) from the map: majority class, share, confidence -> GeoParquet",
        [
            "parcels",
            "--map",
            str(out / "map"),
            "--parcels",
            str(user / "parcels.gpkg"),
            "--id-column",
            "parcel_id",
            "--output",
            str(out / "map" / "parcels.parquet"),
        ],
        args.verbose,
    )
    sweep_data = out / "sweep_data"
    step(
        "8/9 synthesise a small dataset for the sweep (32 samples of 96 x 96 px)",
        ["synth", "--out", str(sweep_data), "--samples", "32", "--size", "96", "--region-size", "0", "--seed", "1"],
        args.verbose,
    )
    step(
        "9/9 sweep tune_spaces/quick.yaml: two fusions x two windows, ASHA stops trials that are behind after epoch 1",
        [
            "tune",
            "--data",
            str(sweep_data),
            "--space",
            str(QUICK_SPACE),
            "--name",
            "demo-quick",
            "--concurrent",
            "2",
            "--storage",
            str(out / "ray_results"),
            "--output",
            str(out / "sweep"),
            "--tracking-uri",
            f"sqlite:///{out / 'mlruns.db'}",
        ],
        args.verbose,
    )
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Where things are:")
    print(
        f"  dataset          {data}  (h5_data/, data_lists/, cascade_labels.csv, norm_stats.json/.png, validation.json)"
    )
    print(
        f"  mapping region   {data / 'region'}  (s2.tif, enmap.tif, prior.tif, label.tif, parcels.gpkg); as a user has it: {user}"
    )
    print(f"  best checkpoint  {run / 'best.ckpt'}  (self-contained: model, taxonomy, statistics, window)")
    print(f"  validation       {run / 'metrics.json'} and plots in {run}")
    print(
        f"  test evaluation  {out / 'test_eval' / 'metrics.json'}, confusion_level*.png, f1_level*.png, changed_vs_unchanged.png"
    )
    print(
        f"  sweep            {out / 'sweep'}  (sweep_summary.csv, trials/<id>/best.ckpt); MLflow parent run demo-quick with 4 children"
    )
    print(
        f"  compare runs     .venv/bin/h2crop runs compare --tracking-uri sqlite:///{out / 'mlruns.db'} --sweep "
        f"demo-quick --by window --plot {out / 'sweep' / 'by_window.png'}"
    )
    print(
        f"  MLflow UI        .venv/bin/h2crop runs ui --tracking-uri sqlite:///{out / 'mlruns.db'}   (once: .venv/bin/pip install 'mlflow>=3.10,<4')"
    )
    print(f"  Ray checkpoints  {out / 'ray_results'}  (re-running the demo resumes the finished run)")
    print(
        f"  region maps      {out / 'map'}  (level1..4.tif, confidence_level1..4.tif COGs, summary.json, "
        "quicklook.png, map.json; tiles/ for resuming)"
    )
    print(f"  parcel crops     {out / 'map' / 'parcels.parquet'}  (GeoParquet: geopandas.read_parquet, QGIS)")


if __name__ == "__main__":
    main()
