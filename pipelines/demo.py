"""`make demo`: the main job end to end on this machine, with a generated dataset.

Today it runs the data part of the job (synthesise -> validate -> stats); training, evaluation and
mapping join as they land.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipelines.cli import main as h2crop


def step(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ h2crop {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = h2crop(argv)
    if code != 0:
        print(f"demo: step '{title}' failed with exit code {code}", file=sys.stderr)
        sys.exit(code)
    print(f"({time.perf_counter() - start:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="where the demo writes (default: demo_output/)")
    parser.add_argument("--samples", type=int, default=48)
    args = parser.parse_args(argv)
    data = args.out / "data"
    start = time.perf_counter()
    step("1/3 synthesise a dataset with the benchmark's layout, and a georeferenced region", ["synth", "--out", str(data), "--samples", str(args.samples)])
    step("2/3 validate every file against the layout and the taxonomy", ["validate", "--data", str(data)])
    step("3/3 per-band normalisation statistics over the training split", ["stats", "--data", str(data)])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Outputs:")
    print(f"  dataset          {data}/h5_data, split lists in {data}/data_lists, taxonomy {data}/cascade_labels.csv")
    print(f"  validation       {data}/validation.json")
    print(f"  statistics       {data}/norm_stats.json")
    print(f"  mapping region   {data}/region/ (s2.tif, enmap.tif, prior.tif, label.tif)")
    print("Next (as the issues land): train tiny_crops_S2_H_P_jun on Ray with MLflow tracking, evaluate on the")
    print("test split, and map the region to Cloud-Optimized GeoTIFFs.")


if __name__ == "__main__":
    main()
