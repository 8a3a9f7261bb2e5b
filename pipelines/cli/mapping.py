"""``h2crop map`` (rasters or a region folder -> class and confidence COGs) and ``h2crop parcels`` (a finished map ->
the majority class per parcel, to GeoParquet)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.cli.options import add_settings_options, settings_from_args
from pipelines.settings import MapSettings


def map_inputs(args: argparse.Namespace):
    """``--region DIR``, or ``--s2`` with ``--enmap``/``--prior``/``--enmap-bands``: one of the two."""
    from h2crop_core.errors import SettingError
    from h2crop_core.mapping import MapInputs, inputs_from_region

    if bool(args.region) == bool(args.s2):
        raise SettingError(
            "give the rasters with --s2 (and --enmap, --prior) or a region folder with --region, not both or neither"
        )
    if args.region:
        if args.enmap or args.prior or args.enmap_bands:
            raise SettingError(
                "--enmap, --prior and --enmap-bands go with --s2; a --region folder names its own rasters"
            )
        return inputs_from_region(args.region)
    return MapInputs.from_paths(args.s2, args.enmap, args.prior, args.enmap_bands or "")


def cmd_map(args: argparse.Namespace) -> int:
    settings = settings_from_args(MapSettings, args)  # checked before anything heavy is imported
    inputs = map_inputs(args)
    from pipelines.mapping.run import map_region

    manifest = map_region(args.checkpoint, inputs, args.output, settings, progress=not args.quiet)
    summary = json.loads((Path(manifest.get("staging", args.output)) / manifest["files"]["summary"]).read_text())
    print(
        f"mapped {manifest['height']}×{manifest['width']} pixels ({summary['mapped_km2']:.2f} of {summary['grid_km2']:.2f} km² with data) in "
        f"{manifest['tiles']} tiles ({manifest.get('tiles_predicted', 0)} predicted now, "
        f"{manifest.get('tiles_resumed', 0)} resumed) to {args.output}:"
    )
    print(
        f"  {', '.join(name for key, name in manifest['files'].items() if key.startswith('level'))} (classes), "
        "confidence_level*.tif, summary.json, quicklook.png, map.json"
    )
    return 0


def cmd_parcels(args: argparse.Namespace) -> int:
    from h2crop_core.mapping.parcels import parcel_statistics

    result = parcel_statistics(args.map, args.parcels, args.output, id_column=args.id_column, progress=not args.quiet)
    print(
        f"{result['parcels']} parcels ({result['mapped']} with mapped pixels, "
        f"{result['parcels'] - result['mapped']} outside the map or without data) "
        f"-> {args.output} (GeoParquet, {result['crs']})"
    )
    return 0


def add_mapping_parsers(add) -> None:
    """``map`` (rasters or a region folder -> class and confidence COGs) and ``parcels`` (map -> GeoParquet)."""
    p = add("map", "map your rasters with a checkpoint: COGs of each level's classes and confidence; resumes by tile")
    p.add_argument("--checkpoint", required=True, type=Path, help="an h2crop checkpoint (e.g. runs/<run>/best.ckpt)")
    p.add_argument(
        "--s2",
        type=Path,
        metavar="FILE_OR_DIR",
        help="Sentinel-2 monthly composites: one GeoTIFF of months x 10 bands (month-major, January first) or a "
        "folder of monthly 10-band GeoTIFFs named by month; its grid is the map's",
    )
    p.add_argument(
        "--enmap",
        type=Path,
        metavar="FILE",
        help="EnMAP scene, any CRS and grid (warped on the fly onto the S2 grid coarsened by 3)",
    )
    p.add_argument(
        "--prior", type=Path, metavar="FILE", help="last year's 4-band crop map, any CRS and grid (nearest neighbour)"
    )
    p.add_argument(
        "--enmap-bands",
        metavar="LIST",
        help="the EnMAP bands the model reads, 1-based, e.g. 1-126,131-222 (default: all; needed when the scene has more)",
    )
    p.add_argument(
        "--region",
        type=Path,
        metavar="DIR",
        help="instead of --s2/--enmap/--prior: a region folder with region.json (h2crop synth writes one)",
    )
    p.add_argument(
        "--output",
        required=True,
        help="output folder or object-store prefix (s3://bucket/maps/x): level<k>.tif, confidence_level<k>.tif, "
        "summary.json, quicklook.png, map.json, tiles/ (rerun to resume)",
    )
    add_settings_options(p, MapSettings)
    p.set_defaults(func=cmd_map)

    p = add(
        "parcels",
        "per parcel of a vector file: the majority class of a finished map, its share and confidence, to GeoParquet",
    )
    p.add_argument("--map", required=True, type=Path, help="a finished h2crop map folder (with map.json)")
    p.add_argument(
        "--parcels",
        required=True,
        type=Path,
        help="parcels: .gpkg, .parquet (GeoParquet), .shp, .geojson or .fgb; any CRS",
    )
    p.add_argument("--output", required=True, type=Path, help="GeoParquet file to write, e.g. parcels_crops.parquet")
    p.add_argument(
        "--id-column", help="the parcels' id column to carry over (default: fid, the feature's id or row number)"
    )
    p.set_defaults(func=cmd_parcels)
