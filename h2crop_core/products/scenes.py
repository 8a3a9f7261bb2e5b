"""Where ``h2crop composite --scenes`` finds its Sentinel-2 scenes: a folder of SAFE products (or their zips),
one SAFE product, a STAC ItemCollection/catalog JSON, or a STAC API URL."""

from __future__ import annotations

from pathlib import Path

from h2crop_core.mapping.region import RegionError
from h2crop_core.products.sentinel2 import Scene, read_safe, safe_products
from h2crop_core.products.stac import stac_scenes


def find_scenes(
    source: str, *, collection: str | None = None, year: int | None = None, bbox: tuple | None = None
) -> list[Scene]:
    """Every scene ``source`` names, of ``year`` if given, sorted by time.

    Args:
        source: a folder of ``*.SAFE`` folders and zips, one of them, a STAC JSON file, or a STAC API URL.
        collection, bbox: for a STAC API (``bbox`` in WGS84 degrees: west, south, east, north).

    Raises:
        RegionError: nothing there, or no scene of ``year`` (naming the source and the years found).
    """
    path = Path(source).expanduser()
    if source.startswith(("http://", "https://")) or path.suffix.lower() == ".json":
        if not source.startswith(("http://", "https://")) and not path.is_file():
            raise RegionError(f"{path}: no such file (the --scenes STAC catalog)")
        scenes = stac_scenes(str(path) if path.is_file() else source, collection=collection, year=year, bbox=bbox)
    elif path.suffix in (".SAFE", ".zip"):
        if not path.exists():
            raise RegionError(f"{path}: no such file (the --scenes SAFE product)")
        scenes = [read_safe(path)]
    elif path.is_dir():
        products = safe_products(path)
        if not products:
            raise RegionError(
                f"{path}: no *.SAFE folders or zips; --scenes takes SAFE products or a STAC catalog (.json)"
            )
        scenes = [read_safe(product) for product in products]
    else:
        raise RegionError(f"{path}: no such folder (--scenes takes SAFE products, a STAC .json or a STAC API URL)")
    found = sorted({s.year for s in scenes})
    if year is not None:
        scenes = [s for s in scenes if s.year == year]
        if not scenes:
            raise RegionError(f"{source}: no scene of {year} (scenes found from {', '.join(map(str, found))})")
    return sorted(scenes, key=lambda s: (s.time, s.id))
