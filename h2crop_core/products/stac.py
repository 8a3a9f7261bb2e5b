"""Sentinel-2 L2A scenes from a STAC catalog: a local ItemCollection or catalog JSON, or a STAC API.

Items carry one asset per band (Earth Search's ``blue``/``nir08``/``scl`` keys or Planetary Computer's
``B02``/``B8A``/``SCL``). Their DN offsets come from the processing baseline the item states, not from the
catalogue's own offset fields, which some catalogues set wrongly (Earth Search issues 66 and 71:
``raster:bands`` offsets and ``earthsearch:boa_offset_applied`` that contradict the pixels): from baseline
04.00 on the DNs carry -1000 unless the catalogue says it already applied it.
"""

from __future__ import annotations

import json
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.sentinel2 import MODEL_BANDS, SAFE_NAMES, Scene, baseline_offset

#: asset key -> model band, for the catalogues whose naming h2crop knows
EARTH_SEARCH_KEYS: dict[str, str] = {
    "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6", "rededge3": "B7",
    "nir": "B8", "nir08": "B8A", "swir16": "B11", "swir22": "B12", "scl": "SCL",
}  # fmt: skip
PLANETARY_COMPUTER_KEYS: dict[str, str] = {SAFE_NAMES[band]: band for band in MODEL_BANDS} | {"SCL": "SCL"}
BASELINE_KEYS = ("s2:processing_baseline", "sentinel:processing_baseline")
APPLIED_KEYS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")


def _band_hrefs(item, where: str) -> dict[str, str]:
    """Model band (and ``SCL``) -> absolute href, whichever of the known namings the item uses."""
    for naming in (EARTH_SEARCH_KEYS, PLANETARY_COMPUTER_KEYS):
        found = {band: item.assets[key].get_absolute_href() for key, band in naming.items() if key in item.assets}
        if len(found) == len(naming):
            return found
    raise RegionError(
        f"{where}: item {item.id} lacks band assets: expected Earth Search keys ({', '.join(EARTH_SEARCH_KEYS)}) "
        f"or Planetary Computer keys ({', '.join(PLANETARY_COMPUTER_KEYS)}); it has {', '.join(sorted(item.assets))}"
    )


def _offsets(item, where: str) -> tuple[float, str, str]:
    """(DN offset, the rule that gave it, the baseline) of an item."""
    baseline = next((str(item.properties[key]) for key in BASELINE_KEYS if key in item.properties), "")
    if any(item.properties.get(key) is True for key in APPLIED_KEYS):
        return 0.0, "catalogue: boa_offset_applied (DNs already harmonised)", baseline
    if baseline:
        return baseline_offset(baseline), f"processing baseline {baseline}", baseline
    raise RegionError(
        f"{where}: item {item.id} states no processing baseline (s2:processing_baseline), so its DN offset "
        "(-1000 from baseline 04.00 on) is unknown"
    )


def _grid(item, scl_href: str) -> tuple[str, tuple[float, float, float, float]]:
    """The item's CRS and native bounds, from the projection extension where it has them, else from the SCL
    file's header."""
    props = item.properties
    code = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None)
    if code and props.get("proj:bbox"):
        return code, tuple(float(v) for v in props["proj:bbox"])
    import rasterio

    with rasterio.open(scl_href) as handle:
        return handle.crs.to_string(), tuple(handle.bounds)


def item_scene(item, where: str) -> Scene:
    """A STAC item of an S2 L2A scene as a :class:`Scene`."""
    hrefs = _band_hrefs(item, where)
    offset, rule, baseline = _offsets(item, where)
    crs, bounds = _grid(item, hrefs["SCL"])
    if item.datetime is None:
        raise RegionError(f"{where}: item {item.id} has no datetime")
    return Scene(
        id=item.id,
        time=item.datetime.isoformat().replace("+00:00", "Z"),
        bands={band: hrefs[band] for band in MODEL_BANDS},
        scl=hrefs["SCL"],
        offsets=dict.fromkeys(MODEL_BANDS, offset),
        quantification=10_000.0,
        baseline=baseline,
        offset_rule=rule,
        crs=crs,
        bounds=bounds,
        source=where,
        cloud_cover=item.properties.get("eo:cloud_cover"),
    )


def _local_items(path: Path) -> list:
    import pystac

    try:
        kind = json.loads(path.read_text()).get("type")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RegionError(f"{path}: not a JSON file ({error})") from None
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_file(str(path)))
    if kind in ("Catalog", "Collection"):
        return list(pystac.read_file(str(path)).get_items(recursive=True))
    if kind == "Feature":
        return [pystac.Item.from_file(str(path))]
    raise RegionError(f"{path}: a STAC file of type {kind!r}; expected an ItemCollection, a catalog or an item")


def _search(url: str, collection: str, year: int | None, bbox: tuple | None) -> list:
    """The items of a STAC API search; a URL that is not a searchable STAC API is one line naming it."""
    import warnings

    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.warnings import DoesNotConformTo, NoConformsTo

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoConformsTo)  # a static catalog: refused below, in one line
            search = Client.open(url).search(
                collections=[collection], bbox=bbox, datetime=f"{year}-01-01/{year}-12-31" if year else None
            )
            return list(search.items())
    except DoesNotConformTo:
        raise RegionError(
            f"{url}: a STAC catalog without item search; give a STAC API, or the catalog's JSON file"
        ) from None
    except (APIError, OSError) as error:  # HTTP errors, connection refused, DNS
        raise RegionError(f"{url}: not a reachable STAC API ({type(error).__name__}: {str(error)[:120]})") from None


def stac_scenes(
    source: str, *, collection: str | None = None, year: int | None = None, bbox: tuple | None = None
) -> list[Scene]:
    """The scenes of a STAC ItemCollection/catalog JSON file, or of a STAC API search (``source`` an http(s)
    URL; ``collection`` required; ``year`` and ``bbox`` (WGS84) narrow it).

    Raises:
        SettingError: an API URL without --collection.
        RegionError: an item without the bands, baseline or datetime compositing needs (naming it).
    """
    if source.startswith(("http://", "https://")):
        if not collection:
            raise SettingError(
                f"--scenes {source} is a STAC API: name the collection with --collection (e.g. sentinel-2-l2a)"
            )
        items = _search(source, collection, year, bbox)
    else:
        items = _local_items(Path(source))
    return [item_scene(item, source) for item in items]
