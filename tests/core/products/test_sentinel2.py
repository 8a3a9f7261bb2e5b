"""Sentinel-2 L2A metadata, offsets and STAC items: each scene's DN offset comes from its own metadata."""

from __future__ import annotations

import numpy as np
import pytest

from h2crop_core.errors import SettingError
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.harmonise import NODATA, to_convention, to_int16
from h2crop_core.products.sentinel2 import MODEL_BANDS, baseline_offset, parse_metadata

MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
 <n1:General_Info><Product_Info>
  <PRODUCT_START_TIME>2022-06-15T10:50:31.024Z</PRODUCT_START_TIME>
  <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
  <Product_Organisation><Granule_List><Granule>
   <IMAGE_FILE>GRANULE/L2A_T31UDQ/IMG_DATA/R10m/T31UDQ_20220615T105031_B02_10m</IMAGE_FILE>
  </Granule></Granule_List></Product_Organisation>
 </Product_Info>
 <Product_Image_Characteristics>
  <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
  {offsets}
 </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>"""


def mtd(baseline: str, offset: int | None) -> str:
    listed = (
        "<BOA_ADD_OFFSET_VALUES_LIST>"
        + "".join(f'<BOA_ADD_OFFSET band_id="{i}">{offset}</BOA_ADD_OFFSET>' for i in range(13))
        + "</BOA_ADD_OFFSET_VALUES_LIST>"
        if offset is not None
        else ""
    )
    return MTD.format(baseline=baseline, offsets=listed)


def test_metadata_offsets_come_from_the_product_not_its_date():
    before = parse_metadata(mtd("03.01", None), "a")
    after = parse_metadata(mtd("04.00", -1000), "b")
    odd = parse_metadata(mtd("05.09", -900), "c")  # band-dependent by definition: whatever the product says
    assert set(before["offsets"].values()) == {0.0} and "no BOA_ADD_OFFSET" in before["offset_rule"]
    assert set(after["offsets"].values()) == {-1000.0} and after["baseline"] == "04.00"
    assert set(odd["offsets"].values()) == {-900.0}
    assert after["quantification"] == 10000.0 and after["images"][0].endswith("_B02_10m")
    assert list(after["offsets"]) == list(MODEL_BANDS)


def test_metadata_without_the_fields_is_refused_naming_the_file():
    with pytest.raises(RegionError, match=r"x/MTD_MSIL2A.xml: no PROCESSING_BASELINE"):
        parse_metadata(mtd("", None).replace("<PROCESSING_BASELINE></PROCESSING_BASELINE>", ""), "x/MTD_MSIL2A.xml")
    with pytest.raises(RegionError, match="not readable XML"):
        parse_metadata("<a>", "y")


@pytest.mark.parametrize(("baseline", "offset"), [("02.14", 0), ("03.01", 0), ("04.00", -1000), ("05.11", -1000)])
def test_baseline_offset(baseline, offset):
    assert baseline_offset(baseline) == offset


def test_baseline_offset_refuses_what_is_not_a_baseline():
    with pytest.raises(SettingError, match="'N0400' is not of the form NN.NN"):
        baseline_offset("N0400")


def test_both_encodings_harmonise_to_one_convention():
    reflectance = np.array([0.0, 0.05, 0.31, 0.9])
    old = np.round(reflectance * 10000).astype(np.uint16) + np.array([1, 0, 0, 0], np.uint16)  # DN 0 is no data
    new = old + np.uint16(1000)
    old[0], new[0] = 0, 0
    a, b = to_convention(old, 0.0, 10000.0), to_convention(new, -1000.0, 10000.0)
    assert np.isnan(a[0]) and np.isnan(b[0])
    np.testing.assert_allclose(a[1:], reflectance[1:] * 10000 + 1000, atol=1e-3)
    np.testing.assert_array_equal(a[1:], b[1:])
    assert to_int16(a).tolist() == [NODATA, 1500, 4100, 10000]
