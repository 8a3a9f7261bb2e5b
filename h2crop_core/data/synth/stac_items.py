"""STAC ItemCollections over generated Sentinel-2 L2A scenes, in the two namings users meet: Earth Search v1
(``blue`` ... ``swir22``, ``scl``; ``raster:bands`` with scale 0.0001 and offset -0.1 from baseline 04.00 on)
and Planetary Computer (``B02`` ... ``B12``, ``B8A``, ``SCL``; no scale or offset on the assets, as its
catalogue has none: a reader must take the offset from ``s2:processing_baseline``).

Asset hrefs are absolute paths of the scenes' files in the products folder's final place (what odc-stac,
stackstac and rasterio open as given); an image in a zipped scene is the GDAL path
``/vsizip/<absolute zip path>/<NAME>.SAFE/<inner path>`` (``zip+file://`` URLs are no standard GDAL reads).
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from h2crop_core.data.synth.s2_plan import Grid, ScenePlan
from h2crop_core.data.synth.s2_products import SAFE_BANDS, TEN_M, image_paths
from h2crop_core.files import write_text_atomic

EXTENSIONS = (
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
)
EARTH_SEARCH_KEYS = dict(
    zip(SAFE_BANDS, ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"))
) | {"SCL": "scl"}
PLANETARY_COMPUTER_KEYS = {band: band for band in SAFE_BANDS} | {"SCL": "SCL"}
#: band -> (common name, centre wavelength µm) for eo:bands
EO_BANDS = {
    "B02": ("blue", 0.49), "B03": ("green", 0.56), "B04": ("red", 0.665), "B05": ("rededge", 0.704),
    "B06": ("rededge", 0.74), "B07": ("rededge", 0.783), "B08": ("nir", 0.842), "B8A": ("nir08", 0.865),
    "B11": ("swir16", 1.61), "B12": ("swir22", 2.19),
}  # fmt: skip


def scene_hrefs(plan: ScenePlan, root: Path, extension: str) -> dict[str, str]:
    """SAFE band name (and ``SCL``) -> the absolute path GDAL opens, for a scene of the products at ``root``."""
    inner = image_paths(plan, extension)
    if plan.zip_suffix:
        archive = root / "s2" / f"{plan.name}{plan.zip_suffix}"
        return {band: f"/vsizip/{archive}/{plan.name}.SAFE/{path}" for band, path in inner.items()}
    return {band: str(root / "s2" / f"{plan.name}.SAFE" / path) for band, path in inner.items()}


def _asset(band: str, href: str, grid: Grid, plan: ScenePlan, media_type: str, earth_search: bool):
    import pystac

    resolution = 10 if band != "SCL" and SAFE_BANDS.index(band) in TEN_M else 20
    fields: dict = {
        "gsd": resolution,
        "proj:shape": list(grid.shape(resolution)),
        "proj:transform": list(grid.transform(resolution))[:6],
    }
    if band == "SCL":
        bands = [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]
    else:
        bands = [{"nodata": 0, "data_type": "uint16", "spatial_resolution": resolution}]
        common, centre = EO_BANDS[band]
        fields["eo:bands"] = [{"name": band, "common_name": common, "center_wavelength": centre}]
        if earth_search:  # Earth Search states the decoding; Planetary Computer does not
            bands[0] |= {"scale": 0.0001, "offset": plan.offset / 10_000.0}
    if earth_search or band == "SCL":
        fields["raster:bands"] = bands
    title = "Scene classification map (SCL)" if band == "SCL" else f"{band} ({resolution} m)"
    return pystac.Asset(href, title=title, media_type=media_type, roles=["data"], extra_fields=fields)


def scene_item(scene: dict, plan: ScenePlan, grid: Grid, hrefs: dict[str, str], media_type: str, earth_search: bool):
    """One :class:`pystac.Item` of a scene (``scene``: its record, with ``geometry`` and ``bbox`` in WGS 84)."""
    import pystac

    zone = int(grid.crs.split(":")[1])
    properties = {
        "platform": f"sentinel-{plan.spacecraft[1:].lower()}" if earth_search else f"Sentinel-{plan.spacecraft[1:]}",
        "constellation": "sentinel-2" if earth_search else "Sentinel 2",
        "instruments": ["msi"],
        "eo:cloud_cover": scene["cloud_percentage"],
        "s2:processing_baseline": plan.baseline,
        "s2:product_type": "S2MSI2A",
        "s2:product_uri": f"{plan.name}.SAFE",
        "s2:nodata_pixel_percentage": scene["nodata_percentage"],
        "proj:epsg": zone,
        "proj:bbox": list(grid.bounds),
    }
    if earth_search:
        properties |= {
            "mgrs:utm_zone": zone % 100,
            "mgrs:latitude_band": plan.tile[3],
            "mgrs:grid_square": plan.tile[4:],
            "earthsearch:boa_offset_applied": False,  # the hrefs are ESA's DNs, offset included
        }
    else:
        properties["s2:mgrs_tile"] = plan.tile[1:]
    item = pystac.Item(
        id=plan.name,
        geometry=scene["geometry"],
        bbox=scene["bbox"],
        datetime=plan.sensed.replace(tzinfo=UTC),
        properties=properties,
        stac_extensions=list(EXTENSIONS),
    )
    keys = EARTH_SEARCH_KEYS if earth_search else PLANETARY_COMPUTER_KEYS
    for band, key in keys.items():
        item.add_asset(key, _asset(band, hrefs[band], grid, plan, media_type, earth_search))
    return item


def write_stac(folder: Path, entries: list[tuple[dict, ScenePlan, Grid]], root: Path, driver: str) -> dict[str, str]:
    """Write ``items.json`` (Earth Search keys) and ``items_pc.json`` (Planetary Computer keys) into ``folder``.

    Args:
        entries: (scene record, plan, grid) of every scene, in the order the items take.
        root: the products folder's final place (the hrefs point there).
        driver: the images' driver (their extension and media type).
    """
    import pystac

    extension, media_type = (
        (".jp2", pystac.MediaType.JPEG2000) if driver == "JP2OpenJPEG" else (".tif", pystac.MediaType.GEOTIFF)
    )
    written = {}
    for name, earth_search in (("items.json", True), ("items_pc.json", False)):
        items = [
            scene_item(scene, plan, grid, scene_hrefs(plan, root, extension), media_type, earth_search)
            for scene, plan, grid in entries
        ]
        collection = pystac.ItemCollection(items)
        write_text_atomic(folder / name, json.dumps(collection.to_dict(), indent=1))
        written["earth_search" if earth_search else "planetary_computer"] = f"stac/{name}"
    return written
