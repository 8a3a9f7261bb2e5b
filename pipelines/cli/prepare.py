"""``h2crop prepare``: your rasters and labelled parcels -> a dataset that validate, stats, train, tune,
baseline and evaluate take."""

from __future__ import annotations

import argparse

from pipelines.cli.options import add_settings_options, settings_from_args
from pipelines.settings import PrepareSettings


def cmd_prepare(args: argparse.Namespace) -> int:
    settings = settings_from_args(PrepareSettings, args, split=tuple(args.split))
    if settings.tile % 96:
        print(
            f"[h2crop] note: tiles of {settings.tile} px; the model's S2 stream takes sides that are multiples of 32 and 3 (96, 192, ...)"
        )
    from pipelines.preparing.report import summary_lines
    from pipelines.preparing.run import prepare_dataset

    report = prepare_dataset(settings, progress=not args.quiet)
    made = f"{report['blocks_scanned']} blocks scanned and {report['blocks_cut']} cut now"
    print(f"prepared {settings.output} ({made}):")
    for line in summary_lines(report):
        print(f"  {line}")
    print(f"  next: h2crop validate --data {settings.output} && h2crop stats --data {settings.output}")
    return 0


def add_prepare_parser(add) -> None:
    p = add(
        "prepare",
        "samples in the benchmark's layout cut from your composites, EnMAP and parcel register, in spatial blocks",
    )
    p.add_argument(
        "--split",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=PrepareSettings.split,
        help=f"fractions of the tiles per split, by whole blocks (default: {' '.join(map(str, PrepareSettings.split))})",
    )
    add_settings_options(p, PrepareSettings)
    p.set_defaults(func=cmd_prepare)
