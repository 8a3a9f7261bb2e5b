"""`make demo`: the main job end to end on this machine, with a generated dataset.

synthesise (with the region as delivered: Sentinel-2 L2A scenes with clouds in two UTM zones and both radiometric
baselines, an EnMAP L2A product, parcels in Lambert-93) -> validate -> stats -> train ``tiny_crops_S2_H_P_jun``
on a local Ray with 2 workers (MLflow tracking) -> evaluate the best checkpoint on the test split -> composite
the scenes into monthly S2 files -> map the composites and the EnMAP product to Cloud-Optimized GeoTIFFs of
classes and confidence with a Ray Data actor pool -> the crop of every parcel to GeoParquet -> your own region:
prepare samples from the composites, EnMAP product and parcel register, fine-tune the checkpoint on them, map,
parcels -> sweep
``tune_spaces/quick.yaml`` (4 trials, ASHA) on a small dataset and compare the trials.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipelines.cli.main import main as h2crop

QUICK_SPACE = Path(__file__).resolve().parents[2] / "tune_spaces" / "quick.yaml"


def flags(**options) -> list[str]:
    """``--name value`` pairs (underscores as dashes), in the order given."""
    return [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def step(title: str, argv: list[str], verbose: bool = False) -> None:
    print(f"\n=== {title}\n$ h2crop {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = h2crop(argv + (["--verbose"] if verbose else []))
    if code != 0:
        print(f"demo: step '{title}' failed with exit code {code}", file=sys.stderr)
        sys.exit(code)
    print(f"({time.perf_counter() - start:.1f} s)", flush=True)


def data_steps(args: argparse.Namespace, data: Path) -> None:
    step(
        "1/16 synthesise a dataset with the benchmark's layout, and a region as delivered: L2A scenes, EnMAP product",
        ["synth", *flags(out=data, samples=args.samples), "--user-files", "--products"],
        args.verbose,
    )
    step(
        "2/16 validate every file against the layout and the taxonomy", ["validate", "--data", str(data)], args.verbose
    )
    step("3/16 per-band normalisation statistics over the training split", ["stats", "--data", str(data)], args.verbose)


def model_steps(args: argparse.Namespace, out: Path, data: Path, run: Path) -> None:
    user, tracking = data / "user_files", f"sqlite:///{out / 'mlruns.db'}"
    step(
        f"4/16 train {args.preset} on a local Ray: 2 workers, MLflow tracking, a checkpoint per epoch",
        ["train", *flags(data=data, preset=args.preset, epochs=args.epochs, workers=2, batch_size=2, lr="2e-3")]
        + flags(warmup_iters=0, run_name=f"demo-{args.preset}", storage=out / "ray_results", output=run)
        + flags(tracking_uri=tracking),
        args.verbose,
    )
    step(
        "5/16 evaluate the best checkpoint on the test split (hierarchy-consistent decoding)",
        ["evaluate", *flags(checkpoint=run / "best.ckpt", data=data, split="test", output=out / "test_eval")]
        + flags(decode="consistent"),
        args.verbose,
    )
    products = data / "products"
    step(
        "6/16 composite the Sentinel-2 L2A scenes (SAFE, clouds masked by SCL, both baselines harmonised, the "
        "other UTM zone warped) into monthly files, block by block on Ray",
        ["composite", *flags(scenes=products / "s2", year=2022, like=data / "region" / "label.tif")]
        + flags(output=out / "composites"),
        args.verbose,
    )
    enmap = next((products / "enmap").glob("ENMAP01-*"))
    step(
        "7/16 map the composites and the EnMAP L2A product (bands picked by wavelength, its cloud masked): "
        "classes and confidence as COGs",
        ["map", *flags(checkpoint=run / "best.ckpt", s2=out / "composites", enmap=enmap)]
        + flags(prior=user / "prior.tif", output=out / "map", actors=2),
        args.verbose,
    )
    step(
        "8/16 the crop of every parcel (Lambert-93 GeoPackage) from the map: majority class, share, confidence "
        "-> GeoParquet",
        ["parcels", *flags(map=out / "map", parcels=user / "parcels.gpkg", id_column="parcel_id")]
        + flags(output=out / "map" / "parcels.parquet"),
        args.verbose,
    )


def own_region_steps(args: argparse.Namespace, out: Path, data: Path, run: Path) -> None:
    """Your own region: samples cut from the composites, the EnMAP product and the parcel register (national
    codes through a crosswalk), the demo's checkpoint fine-tuned on them, mapped, per parcel."""
    user, own, tuned = data / "user_files", out / "own_data", out / "own_run"
    enmap = next((data / "products" / "enmap").glob("ENMAP01-*"))
    step(
        "9/16 prepare samples from the composites, the EnMAP product and the parcel register (CODE_CULTU through "
        "a crosswalk to HCAT3), in spatial blocks",
        ["prepare", *flags(s2=out / "composites", enmap=enmap, parcels=user / "parcels.gpkg", code_column="CODE_CULTU")]
        + flags(crosswalk=user / "crosswalk.csv", prior_parcels=user / "parcels_prior.gpkg")
        + flags(taxonomy=data / "cascade_labels.csv", block=1.92, output=own),
        args.verbose,
    )
    step("10/16 validate the prepared samples", ["validate", "--data", str(own)], args.verbose)
    step("11/16 their normalisation statistics", ["stats", "--data", str(own)], args.verbose)
    step(
        "12/16 fine-tune the demo's checkpoint on them: streams frozen for the first epoch",
        ["train", *flags(data=own, preset=args.preset, init=run / "best.ckpt", freeze="streams", freeze_epochs=1)]
        + flags(epochs=3, workers=2, batch_size=2, lr="1e-3", warmup_iters=0, run_name=f"demo-own-{args.preset}")
        + flags(storage=out / "ray_results", output=tuned, tracking_uri=f"sqlite:///{out / 'mlruns.db'}"),
        args.verbose,
    )
    step(
        "13/16 map the region with the fine-tuned checkpoint",
        ["map", *flags(checkpoint=tuned / "best.ckpt", s2=out / "composites", enmap=enmap)]
        + flags(prior=user / "prior.tif", output=out / "own_map", actors=2),
        args.verbose,
    )
    step(
        "14/16 the crop of every parcel from that map",
        ["parcels", *flags(map=out / "own_map", parcels=user / "parcels.gpkg", id_column="parcel_id")]
        + flags(output=out / "own_map" / "parcels.parquet"),
        args.verbose,
    )


def sweep_steps(args: argparse.Namespace, out: Path) -> None:
    sweep_data = out / "sweep_data"
    step(
        "15/16 synthesise a small dataset for the sweep (32 samples of 96 x 96 px)",
        ["synth", *flags(out=sweep_data, samples=32, size=96, region_size=0, seed=1)],
        args.verbose,
    )
    step(
        "16/16 sweep tune_spaces/quick.yaml: two fusions x two windows, ASHA stops trials that are behind after epoch 1",
        ["tune", *flags(data=sweep_data, space=QUICK_SPACE, name="demo-quick", concurrent=2)]
        + flags(storage=out / "ray_results", output=out / "sweep", tracking_uri=f"sqlite:///{out / 'mlruns.db'}"),
        args.verbose,
    )


def where_things_are(out: Path, data: Path, run: Path) -> None:
    uri = f"sqlite:///{out / 'mlruns.db'}"
    rows = {
        "dataset": f"{data}  (h5_data/, data_lists/, cascade_labels.csv, norm_stats.json/.png, validation.json)",
        "mapping region": f"{data / 'region'}  (s2.tif, enmap.tif, prior.tif, label.tif, parcels.gpkg); "
        f"as a user has it: {data / 'user_files'}; as delivered: {data / 'products'} (s2/ SAFE scenes, stac/, "
        "enmap/, truth/)",
        "composites": f"{out / 'composites'}  (S2_2022-01..12.tif, clear/ counts, composite.json)",
        "best checkpoint": f"{run / 'best.ckpt'}  (self-contained: model, taxonomy, statistics, window)",
        "validation": f"{run / 'metrics.json'} and plots in {run}",
        "test evaluation": f"{out / 'test_eval' / 'metrics.json'}, confusion_level*.png, f1_level*.png, "
        "changed_vs_unchanged.png",
        "sweep": f"{out / 'sweep'}  (sweep_summary.csv, trials/<id>/best.ckpt); MLflow parent run demo-quick "
        "with 4 children",
        "compare runs": f".venv/bin/h2crop runs compare --tracking-uri {uri} --sweep demo-quick --by window "
        f"--plot {out / 'sweep' / 'by_window.png'}",
        "MLflow UI": f".venv/bin/h2crop runs ui --tracking-uri {uri}   (http://127.0.0.1:5000)",
        "Ray checkpoints": f"{out / 'ray_results'}  (re-running the demo resumes the finished run)",
        "region maps": f"{out / 'map'}  (level1..4.tif, confidence_level1..4.tif COGs, summary.json, quicklook.png, "
        "map.json; tiles/ for resuming)",
        "parcel crops": f"{out / 'map' / 'parcels.parquet'}  (GeoParquet: geopandas.read_parquet, QGIS)",
        "your own region": f"{out / 'own_data'} (prepare.json: sources, unknown codes, splits, each sample's "
        f"bounds); fine-tuned {out / 'own_run' / 'best.ckpt'} (init_report.json); {out / 'own_map'}",
    }
    for name, where in rows.items():
        print(f"  {name:16s} {where}")


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
    start = time.perf_counter()
    data_steps(args, data)
    model_steps(args, out, data, run)
    own_region_steps(args, out, data, run)
    sweep_steps(args, out)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Where things are:")
    where_things_are(out, data, run)


if __name__ == "__main__":
    main()
