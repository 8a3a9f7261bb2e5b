"""``h2crop composite``: Sentinel-2 L2A scenes (SAFE products or a STAC catalog) -> the monthly composites
``h2crop map --s2 DIR`` reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.options import add_settings_options, settings_from_args
from pipelines.settings import CompositeSettings


def target_grid(args: argparse.Namespace, resolution: float):
    """``--like RASTER``, or ``--bounds W S E N`` with ``--crs``: one of the two."""
    from h2crop_core.compositing.grid import TargetGrid
    from h2crop_core.errors import SettingError

    if bool(args.like) == bool(args.bounds):
        raise SettingError("give the grid with --like RASTER or with --bounds W S E N and --crs, not both or neither")
    if args.like:
        if args.crs:
            raise SettingError("--crs goes with --bounds; --like takes the raster's own CRS")
        return TargetGrid.like(args.like)
    if not args.crs:
        raise SettingError("--bounds needs --crs (e.g. --crs EPSG:32631), the CRS the bounds are in")
    return TargetGrid.from_bounds(tuple(args.bounds), args.crs, resolution)


def cmd_composite(args: argparse.Namespace) -> int:
    settings = settings_from_args(CompositeSettings, args)
    grid = target_grid(args, settings.resolution)
    from pipelines.compositing.run import composite_region

    manifest = composite_region(args.scenes, args.year, args.output, grid, settings, progress=not args.quiet)
    months = manifest["months"]
    low = min(months.items(), key=lambda item: item[1]["clear_share"])
    print(
        f"composited {len(manifest['scenes'])} scenes into {len(months)} months of {grid.height}×{grid.width} px "
        f"({manifest['blocks_made']} blocks made now, {manifest['blocks_resumed']} resumed) in {args.output}:"
    )
    print(
        f"  {', '.join(manifest['files'].values())}; clear counts in clear/; composite.json. Least covered: month "
        f"{low[0]} ({low[1]['clear_share']:.0%} of pixels with a clear observation)"
    )
    print(f"  map them: h2crop map --checkpoint CKPT --s2 {args.output} [--enmap PRODUCT] --output MAP")
    return 0


def add_composite_parser(add) -> None:
    p = add(
        "composite", "monthly Sentinel-2 composites from L2A scenes (SAFE folders/zips or STAC), for h2crop map --s2"
    )
    p.add_argument(
        "--scenes",
        required=True,
        help="a folder of SAFE products (*.SAFE or their zips), one SAFE product, a STAC ItemCollection/catalog "
        "JSON, or a STAC API URL (with --collection)",
    )
    p.add_argument("--year", required=True, type=int, help="the year to composite (scenes of other years are left out)")
    p.add_argument(
        "--output", required=True, type=Path, help="folder for S2_<year>-<month>.tif, clear/, composite.json"
    )
    p.add_argument("--like", type=Path, help="a raster whose grid (CRS, pixel size, extent) the composites take")
    p.add_argument("--bounds", type=float, nargs=4, metavar=("W", "S", "E", "N"), help="the region in --crs units")
    p.add_argument("--crs", help="the CRS of --bounds and of the composites, e.g. EPSG:32631")
    add_settings_options(p, CompositeSettings)
    p.set_defaults(func=cmd_composite)
