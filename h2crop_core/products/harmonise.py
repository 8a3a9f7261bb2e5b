"""One reflectance convention for every Sentinel-2 scene, from each scene's own metadata.

L2A DNs changed meaning on 25 January 2022 (processing baseline 04.00): reflectance = (DN + BOA_ADD_OFFSET) /
QUANTIFICATION_VALUE, with BOA_ADD_OFFSET -1000 from then on and none before; DN 0 is no data in both. Scenes
from either side of that date differ by 1,000 unless converted, and no library h2crop uses converts them (odc-stac
applies no offset; catalogues flag it wrongly at times), so it is done here, per scene and band.

h2crop's convention (``S2_CONVENTION``) is the encoding of baseline 04.00 on: stored value = 10,000 x reflectance
+ 1,000, as ``h2crop synth`` writes its S2 arrays. A composite of scenes of any baseline is in it.
"""

from __future__ import annotations

import numpy as np

#: the name of h2crop's S2 convention (GeoTIFF tag ``h2crop_s2_convention`` of composites, checkpoints' contract)
S2_CONVENTION = "l2a-offset-1000"
SCALE = 10_000.0
OFFSET = 1_000.0
#: the value of a composite pixel without a clear observation
NODATA = -32768


def to_convention(dn: np.ndarray, offset: float, quantification: float) -> np.ndarray:
    """DNs of one band of one scene -> float32 values in h2crop's convention; DN 0 (no data) -> NaN.

    Args:
        dn: the band's DNs (any integer or float dtype; a warped read may give fractional values).
        offset: the scene's BOA_ADD_OFFSET for the band (-1000 from baseline 04.00 on, 0 before).
        quantification: its BOA_QUANTIFICATION_VALUE (10,000).
    """
    reflectance = (dn.astype(np.float32) + np.float32(offset)) / np.float32(quantification)
    values = reflectance * np.float32(SCALE) + np.float32(OFFSET)
    values[dn == 0] = np.nan
    return values


def to_int16(values: np.ndarray) -> np.ndarray:
    """Float values in the convention (NaN = none) -> int16 with :data:`NODATA`, rounded half to even."""
    out = np.clip(np.rint(np.nan_to_num(values, nan=NODATA)), -32767, 32767).astype(np.int16)
    out[np.isnan(values)] = NODATA
    return out
