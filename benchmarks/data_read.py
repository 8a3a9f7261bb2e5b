"""Sample reader throughput and bytes read per temporal window and modality set, against plain h5py.

For each window (jun/aug/oct/dec) and modality set, the h2crop reader (``SampleReader`` with every check
on, taxonomy range checks included) and a plain h5py read of the same arrays (``f[key][:T]``) read the
same files, interleaved, in the same run. Bytes are what the process pulled through read syscalls
(``rchar`` in /proc/self/io) while reading. Files are warm in the page cache after a first pass.

    python benchmarks/data_read.py [--data ROOT] [--samples 24] [--repeats 5] [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleReader
from h2crop_core.data.schema import KEY_SPELLINGS, window_months
from h2crop_core.data.synth import synthesize_dataset
from h2crop_core.taxonomy import load_taxonomy

WINDOWS = ("jun", "aug", "oct", "dec")
MODALITY_SETS = {
    "S2+label": ("s2", "label"),
    "S2+H+label": ("s2", "enmap", "label"),
    "S2+H+P+label": ("s2", "enmap", "prior", "label"),
}


def bytes_read_so_far() -> int:
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


def plain_h5py_read(path: Path, months: int, modalities: tuple[str, ...]) -> dict:
    """The simplest honest baseline: open, slice the same arrays, close."""
    out = {}
    with h5py.File(path, "r") as handle:
        for modality in modalities:
            key = next(k for k in KEY_SPELLINGS[modality] if k in handle)
            out[modality] = handle[key][:months] if modality == "s2" else handle[key][...]
    return out


def timed(fn, paths) -> tuple[float, int]:
    start_bytes, start = bytes_read_so_far(), time.perf_counter()
    for path in paths:
        fn(path)
    return time.perf_counter() - start, bytes_read_so_far() - start_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset root (default: generate one in a temporary folder)")
    parser.add_argument("--samples", type=int, default=24, help="samples to generate when --data is not given")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "data_read.json")
    parser.add_argument("--smoke", action="store_true", help="3 samples, one repeat (checks that it runs)")
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.repeats = 3, 1

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or synthesize_dataset(Path(tmp) / "data", args.samples, region_size=None, progress=False).root
        index = DatasetIndex(root)
        taxonomy = load_taxonomy(root)
        paths = index.all_paths()
        for path in paths:  # warm the page cache so both readers see the same state
            path.read_bytes()
        rows = []
        for set_name, modalities in MODALITY_SETS.items():
            for window in WINDOWS:
                months = window_months(window)
                reader = SampleReader(window, modalities, taxonomy=taxonomy)
                ours, base = [], []
                for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
                    ours.append(timed(reader.read, paths))
                    base.append(timed(lambda p, m=months, mods=modalities: plain_h5py_read(p, m, mods), paths))
                ours_s = min(t for t, _ in ours)
                base_s = min(t for t, _ in base)
                rows.append(
                    {
                        "modalities": set_name,
                        "window": window,
                        "months": months,
                        "reader_samples_per_s": len(paths) / ours_s,
                        "h5py_samples_per_s": len(paths) / base_s,
                        "speed_ratio": base_s / ours_s,
                        "median_speed_ratio": statistics.median(b / o for (o, _), (b, _) in zip(ours, base)),
                        "reader_mb_per_sample": ours[0][1] / len(paths) / 1e6,
                        "h5py_mb_per_sample": base[0][1] / len(paths) / 1e6,
                    }
                )
        for row in rows:
            dec = next(r for r in rows if r["modalities"] == row["modalities"] and r["window"] == "dec")
            row["bytes_vs_dec"] = row["reader_mb_per_sample"] / dec["reader_mb_per_sample"]

    header = f"{'modalities':<14}{'window':<7}{'reader/s':>10}{'h5py/s':>10}{'ratio':>7}{'MB/sample':>11}{'h5py MB':>9}{'vs dec':>8}"
    print(f"{len(paths)} samples, best of {args.repeats} interleaved repeats, warm page cache")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['modalities']:<14}{r['window']:<7}{r['reader_samples_per_s']:>10.1f}{r['h5py_samples_per_s']:>10.1f}"
            f"{r['speed_ratio']:>7.2f}{r['reader_mb_per_sample']:>11.2f}{r['h5py_mb_per_sample']:>9.2f}{r['bytes_vs_dec']:>8.0%}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "data_read",
        "samples": len(paths),
        "repeats": args.repeats,
        "python": platform.python_version(),
        "rows": rows,
    }
    args.json.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
