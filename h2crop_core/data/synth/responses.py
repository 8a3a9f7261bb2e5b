"""Spectral responses of the two sensors on PROSAIL's 1-nm grid (400-2500 nm): what a band of Sentinel-2 or
EnMAP records of a reflectance spectrum.

A band's value is the spectrum weighted by the band's spectral response function (SRF) and normalised by the
SRF's integral. ESA publishes the Sentinel-2 SRFs as tables (``S2-SRF_COPE-GSEG-EOPG-TN-15-0007``) that cannot
be downloaded where h2crop is built, so each band here is a Gaussian with the band's official central
wavelength and bandwidth (taken as the full width at half maximum) of Sentinel-2A, as listed in the Sentinel-2
User Handbook / SentiWiki MSI band table. The Gaussian is a fair stand-in for the narrow bands (B3-B8A) and
misses the flat tops and steep edges of the broad ones (B2, B8, B11, B12): a band's value is right where the
spectrum is smooth over the band and off where it bends within it (not measured against ESA's tables).

EnMAP's bands are close to Gaussian: the benchmark's 218 nominal centres
(:data:`~h2crop_core.products.wavelengths.BENCHMARK_ENMAP_NM`) with a FWHM of 6.5 nm on the VNIR detector and
10 nm on the SWIR detector (the mission's nominal sampling; delivered products state their own widths).
"""

from __future__ import annotations

import numpy as np

from h2crop_core.products.wavelengths import BENCHMARK_BANDS, BENCHMARK_ENMAP_NM, VNIR_BANDS

#: PROSAIL's wavelengths (nm): 400-2500 at 1 nm
WAVELENGTHS_NM = np.arange(400, 2501, dtype=np.float64)
#: Sentinel-2A MSI bands in the model's order: (name, central wavelength nm, bandwidth nm), from ESA's
#: Sentinel-2 User Handbook (S2A column)
S2A_BANDS: tuple[tuple[str, float, float], ...] = (
    ("B2", 492.4, 66.0),
    ("B3", 559.8, 36.0),
    ("B4", 664.6, 31.0),
    ("B5", 704.1, 15.0),
    ("B6", 740.5, 15.0),
    ("B7", 782.8, 20.0),
    ("B8", 832.8, 106.0),
    ("B8A", 864.7, 21.0),
    ("B11", 1613.7, 91.0),
    ("B12", 2202.4, 175.0),
)
#: EnMAP full width at half maximum (nm) on each detector
ENMAP_FWHM_VNIR_NM = 6.5
ENMAP_FWHM_SWIR_NM = 10.0
#: FWHM = this × sigma for a Gaussian
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def gaussian_responses(centres_nm: np.ndarray, fwhm_nm: np.ndarray) -> np.ndarray:
    """(bands, 2101) Gaussian SRFs on :data:`WAVELENGTHS_NM`, each row summing to 1 (so ``responses @ spectrum``
    is the band's reflectance)."""
    sigma = np.asarray(fwhm_nm, dtype=np.float64)[:, None] / _FWHM_PER_SIGMA
    responses = np.exp(-0.5 * ((WAVELENGTHS_NM[None] - np.asarray(centres_nm, np.float64)[:, None]) / sigma) ** 2)
    return responses / responses.sum(axis=1, keepdims=True)


def s2_responses() -> np.ndarray:
    """(10, 2101) the Sentinel-2 bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 (the model's order)."""
    return gaussian_responses(np.array([b[1] for b in S2A_BANDS]), np.array([b[2] for b in S2A_BANDS]))


def enmap_responses() -> np.ndarray:
    """(218, 2101) the benchmark's EnMAP bands, in its order (6.5 nm FWHM on VNIR bands 1-91, 10 nm on SWIR)."""
    fwhm = np.array([ENMAP_FWHM_VNIR_NM if band in VNIR_BANDS else ENMAP_FWHM_SWIR_NM for band in BENCHMARK_BANDS])
    return gaussian_responses(np.array(BENCHMARK_ENMAP_NM), fwhm)
