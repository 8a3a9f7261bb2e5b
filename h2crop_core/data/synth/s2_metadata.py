"""The XML of a generated Sentinel-2 L2A product: ``MTD_MSIL2A.xml`` (product metadata) and the granule's
``MTD_TL.xml`` (tile geocoding), with the elements and namespaces of ESA's Level-2A format (PSD 14.x).

Only what a reader of L2A products uses is written: product times, type and processing baseline, the image
files (listed without extension, as ESA lists them), the quantification values, ``BOA_ADD_OFFSET`` per band
(from baseline 04.00 on only), the spectral band table, the special values, the SCL class table, the footprint,
and the cloud and no-data percentages. The real files carry much more (reflectance conversion, solar
irradiance, QI reports, auxiliary data names) that no reader here needs.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from h2crop_core.data.synth.s2_plan import Grid, ScenePlan

PRODUCT_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
TILE_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"
#: (band_id, physical band, resolution m, central wavelength nm) of the 13 MSI bands, as the MTD lists them
MSI_BANDS = (
    (0, "B1", 60, 442.7), (1, "B2", 10, 492.7), (2, "B3", 10, 559.8), (3, "B4", 10, 664.6), (4, "B5", 20, 704.1),
    (5, "B6", 20, 740.5), (6, "B7", 20, 782.8), (7, "B8", 10, 832.8), (8, "B8A", 20, 864.7), (9, "B9", 60, 945.1),
    (10, "B10", 60, 1373.5), (11, "B11", 20, 1613.7), (12, "B12", 20, 2202.4),
)  # fmt: skip
SCL_NAMES = (
    "SC_NODATA", "SC_SATURATED_DEFECTIVE", "SC_DARK_FEATURE_SHADOW", "SC_CLOUD_SHADOW", "SC_VEGETATION",
    "SC_NOT_VEGETATED", "SC_WATER", "SC_UNCLASSIFIED", "SC_CLOUD_MEDIUM_PROBA", "SC_CLOUD_HIGH_PROBA",
    "SC_THIN_CIRRUS", "SC_SNOW_ICE",
)  # fmt: skip


def _sub(parent: ET.Element, tag: str, text: object = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = str(text)
    return element


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def product_metadata(
    plan: ScenePlan, images: list[str], footprint: list[tuple[float, float]], stats: dict[str, float]
) -> bytes:
    """``MTD_MSIL2A.xml`` of a scene.

    Args:
        images: the image files relative to the SAFE folder, without extension.
        footprint: (longitude, latitude) of the data footprint's outer ring.
        stats: ``cloud`` and ``nodata`` percentages.
    """
    ET.register_namespace("n1", PRODUCT_NS)
    root = ET.Element(f"{{{PRODUCT_NS}}}Level-2A_User_Product")
    general = _sub(root, f"{{{PRODUCT_NS}}}General_Info")
    info = _sub(general, "Product_Info")
    start = plan.sensed.strftime("%Y-%m-%dT%H:%M:%S.024Z")
    _sub(info, "PRODUCT_START_TIME", start)
    _sub(info, "PRODUCT_STOP_TIME", start)
    _sub(info, "PRODUCT_URI", f"{plan.name}.SAFE")
    _sub(info, "PROCESSING_LEVEL", "Level-2A")
    _sub(info, "PRODUCT_TYPE", "S2MSI2A")
    _sub(info, "PROCESSING_BASELINE", plan.baseline)
    _sub(info, "GENERATION_TIME", plan.generated.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    datatake = _sub(
        info,
        "Datatake",
        datatakeIdentifier=f"G{plan.spacecraft}_{plan.stamp}_{plan.absolute_orbit:06d}_N{plan.baseline}",
    )
    _sub(datatake, "SPACECRAFT_NAME", f"Sentinel-{plan.spacecraft[1:]}")
    _sub(datatake, "DATATAKE_TYPE", "INS-NOBS")
    _sub(datatake, "DATATAKE_SENSING_START", start)
    _sub(datatake, "SENSING_ORBIT_NUMBER", plan.relative_orbit)
    _sub(datatake, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    granules = _sub(_sub(info, "Product_Organisation"), "Granule_List")
    granule = _sub(granules, "Granule", granuleIdentifier=plan.granule, imageFormat="JPEG2000")
    for image in images:
        _sub(granule, "IMAGE_FILE", image)
    _image_characteristics(_sub(general, "Product_Image_Characteristics"), plan)
    geometric = _sub(root, f"{{{PRODUCT_NS}}}Geometric_Info")
    footprint_element = _sub(_sub(geometric, "Product_Footprint"), "Product_Footprint")
    ring = " ".join(f"{lat:.6f} {lon:.6f}" for lon, lat in footprint)  # ESA lists latitude first
    _sub(_sub(footprint_element, "Global_Footprint"), "EXT_POS_LIST", ring)
    quality = _sub(root, f"{{{PRODUCT_NS}}}Quality_Indicators_Info")
    _sub(quality, "Cloud_Coverage_Assessment", f"{stats['cloud']:.6f}")
    content = _sub(_sub(quality, "Technical_Quality_Assessment"), "Image_Content_QI")
    _sub(content, "NODATA_PIXEL_PERCENTAGE", f"{stats['nodata']:.6f}")
    return _xml(root)


def _image_characteristics(parent: ET.Element, plan: ScenePlan) -> None:
    """Special values, quantification, the offsets (from baseline 04.00 on), the band and SCL tables."""
    for text, index in (("NODATA", 0), ("SATURATED", 65535)):
        special = _sub(parent, "Special_Values")
        _sub(special, "SPECIAL_VALUE_TEXT", text)
        _sub(special, "SPECIAL_VALUE_INDEX", index)
    values = _sub(parent, "QUANTIFICATION_VALUES_LIST")
    _sub(values, "BOA_QUANTIFICATION_VALUE", 10000, unit="none")
    _sub(values, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
    _sub(values, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
    if plan.offset:  # the list itself is new in baseline 04.00: older products have none
        offsets = _sub(parent, "BOA_ADD_OFFSET_VALUES_LIST")
        for band_id, *_ in MSI_BANDS:
            _sub(offsets, "BOA_ADD_OFFSET", int(plan.offset), band_id=str(band_id))
    spectral = _sub(parent, "Spectral_Information_List")
    for band_id, band, resolution, centre in MSI_BANDS:
        entry = _sub(spectral, "Spectral_Information", bandId=str(band_id), physicalBand=band)
        _sub(entry, "RESOLUTION", resolution)
        _sub(_sub(entry, "Wavelength"), "CENTRAL", centre, unit="nm")
    classes = _sub(parent, "Scene_Classification_List")
    for index, name in enumerate(SCL_NAMES):
        entry = _sub(classes, "Scene_Classification_ID")
        _sub(entry, "SCENE_CLASSIFICATION_TEXT", name)
        _sub(entry, "SCENE_CLASSIFICATION_INDEX", index)


def tile_metadata(plan: ScenePlan, grid: Grid) -> bytes:
    """The granule's ``MTD_TL.xml``: the tile's CRS, and its size and corner at 10 and 20 m."""
    ET.register_namespace("n1", TILE_NS)
    root = ET.Element(f"{{{TILE_NS}}}Level-2A_Tile_ID")
    general = _sub(root, f"{{{TILE_NS}}}General_Info")
    _sub(general, "TILE_ID", f"{plan.spacecraft}_OPER_MSI_L2A_TL_{plan.tile}_{plan.stamp}_N{plan.baseline}")
    _sub(general, "SENSING_TIME", plan.sensed.strftime("%Y-%m-%dT%H:%M:%S.024Z"))
    geocoding = _sub(_sub(root, f"{{{TILE_NS}}}Geometric_Info"), "Tile_Geocoding")
    zone = int(grid.crs.split(":")[1]) % 100
    hemisphere = "S" if int(grid.crs.split(":")[1]) >= 32700 else "N"
    _sub(geocoding, "HORIZONTAL_CS_NAME", f"WGS84 / UTM zone {zone}{hemisphere}")
    _sub(geocoding, "HORIZONTAL_CS_CODE", grid.crs)
    for resolution in (10, 20):
        size = _sub(geocoding, "Size", resolution=str(resolution))
        rows, columns = grid.shape(resolution)
        _sub(size, "NROWS", rows)
        _sub(size, "NCOLS", columns)
    for resolution in (10, 20):
        position = _sub(geocoding, "Geoposition", resolution=str(resolution))
        _sub(position, "ULX", f"{grid.left:.0f}")
        _sub(position, "ULY", f"{grid.top:.0f}")
        _sub(position, "XDIM", resolution)
        _sub(position, "YDIM", -resolution)
    return _xml(root)
