"""One sample cut from the user's rasters and parcels: S2, EnMAP, prior and labels of a tile, as the benchmark
stores them (int16 / uint8, its HDF5 keys), with where it came from (``crs``, ``bounds``) as attributes.

The rasters are read through :class:`~h2crop_core.mapping.region_reader.RegionReader`, the reader ``h2crop map``
uses (EnMAP products by wavelength with their flagged pixels masked, anything off the S2 grid warped), so a
model trained on prepared samples sees its inputs as the map will give them. The benchmark's samples have no
gaps; composites and EnMAP scenes do: a missing S2 value is filled with its month and band's mean over the
tile's valid pixels (else the band's mean over the other months), a missing EnMAP value with its band's
mean, so that normalised they sit near the band mean, as the map fills them; labels under pixels without
enough data are unlabelled. The filled shares are attributes of the sample.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import h5py
import numpy as np

from h2crop_core.data.schema import H2CROP_SPEC, KEY_STYLES, SampleSpec
from h2crop_core.taxonomy import UNLABELLED


@dataclass(frozen=True)
class CutOptions:
    """How a tile becomes a sample (the part of ``PrepareSettings`` the workers need)."""

    erode: int = 0
    outside: str = "unlabelled"
    min_labelled: float = 0.05
    min_valid: float = 0.5


def class_pixels(stack: np.ndarray) -> dict[str, dict[str, int]]:
    """Labelled pixels per class at each level (``{"level1": {"3": 1200, ...}, ...}``), 255 left out."""
    out = {}
    for k in range(stack.shape[0]):
        counts = np.bincount(stack[k].ravel(), minlength=256)[:UNLABELLED]
        out[f"level{k + 1}"] = {str(c): int(counts[c]) for c in np.flatnonzero(counts)}
    return out


def labelled_share(stack: np.ndarray) -> float:
    return float((stack[-1] != UNLABELLED).mean())


def fill_s2(s2: np.ma.MaskedArray) -> tuple[np.ndarray, float]:
    """(T, bands, n, n) int16 with no data filled (month and band mean, else the band's mean over the months
    with data, else 0), and the share filled."""
    mask = np.ma.getmaskarray(s2)
    values = np.ma.filled(s2, 0).astype(np.float64)
    present = (~mask).sum(axis=(2, 3))
    means = np.where(present > 0, (values * ~mask).sum(axis=(2, 3)) / np.maximum(present, 1), np.nan)
    if np.isfinite(means).any():  # a month and band with no valid pixel: the band's mean over the other months
        means = np.where(np.isnan(means), np.nanmean(means, axis=0)[None, :], means)
    means = np.nan_to_num(means, nan=0.0)
    out = np.where(mask, np.round(means)[:, :, None, None], values)
    return out.astype(np.int16), float(mask.mean())


def fill_enmap(enmap: np.ma.MaskedArray) -> tuple[np.ndarray, float]:
    """(bands, m, m) int16 with no data filled by the band's mean over the tile (0 where a band has none)."""
    mask = np.ma.getmaskarray(enmap)
    means = np.ma.filled(enmap.astype(np.float64).mean(axis=(1, 2)), 0.0)
    out = np.where(mask, np.round(means)[:, None, None], np.ma.filled(enmap, 0))
    return out.astype(np.int16), float(mask.mean())


def valid_pixels(s2: np.ma.MaskedArray, enmap: np.ma.MaskedArray | None, factor: int) -> np.ndarray:
    """(n, n): pixels with every S2 band in at least half the months read and, with EnMAP, EnMAP data."""
    mask = np.ma.getmaskarray(s2)
    months_with = (~mask.any(axis=1)).sum(axis=0)
    valid = months_with * 2 >= s2.shape[0]
    if enmap is not None:
        under = ~np.ma.getmaskarray(enmap).all(axis=0)
        valid &= np.repeat(np.repeat(under, factor, 0), factor, 1)
    return valid


def pad_months(s2: np.ma.MaskedArray, months: int) -> np.ma.MaskedArray:
    """S2 of the months read, padded with no data to ``months`` (January first)."""
    if s2.shape[0] >= months:
        return s2
    missing = np.ma.masked_all((months - s2.shape[0], *s2.shape[1:]), dtype=s2.dtype)
    return np.ma.concatenate([s2, missing])


def sample_bytes(arrays: dict[str, np.ndarray], attrs: dict, compress: tuple[str, ...] = ()) -> bytes:
    """An HDF5 sample with the benchmark's keys (``S2_data``, ``EnMAP_data``, ``label``, ``priors``) and
    ``attrs`` on the file; modalities in ``compress`` are gzip-compressed (an EnMAP cube of zeros)."""
    keys = KEY_STYLES["files"]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for modality, array in arrays.items():
            extra = {"compression": "gzip", "chunks": True} if modality in compress else {}
            handle.create_dataset(keys[modality], data=array, track_times=False, **extra)
        for key, value in attrs.items():
            handle.attrs[key] = value
    return buffer.getvalue()


def empty_enmap(spec: SampleSpec = H2CROP_SPEC) -> np.ndarray:
    return np.zeros(spec.shape("enmap"), dtype=np.int16)
