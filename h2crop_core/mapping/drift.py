"""The drift warning: inputs whose values do not look like the checkpoint's training data.

Before mapping, the raw S2 and EnMAP values of a few tiles are compared with the checkpoint's normalisation
statistics. Each band's shift is ``(mean of the inputs - mean of the statistics) / std of the statistics``;
a modality whose bands sit, on average, more than ``sigmas`` standard deviations off (or, for S2 stored with
the contract's offset of 1000, whose visible bands often fall below that offset) gets one warning naming
the bands and the likely cause: an unharmonised L2A offset of 1000, a 0-1 reflectance scale, another scale.

Measured on the generated world (``h2crop synth`` with 4 seeds, 768 px regions; 400 windows of 1 or 4
tiles of 96 or 192 px; the statistics of each seed's training split), the mean over bands of the signed
shift, and the share of S2 B2-B4 values below 1000:

=====================  ===============  ==================  ==============================
inputs                 S2               EnMAP               S2 B2-B4 values below 1000
=====================  ===============  ==================  ==============================
clean                  -0.31 .. +0.26   -0.37 .. +0.28      0-5 %
S2 - 1000 (no offset)  -1.75 .. -1.18   (clean)             29-60 %
divided by 10,000      -4.75 .. -4.15   -5.59 .. -3.92      100 %
=====================  ===============  ==================  ==============================

Windows of one seed's region against another seed's statistics (another generated world) stay within
0.36 std. A single band's shift separates less well (a clean window's largest band shift reached 0.98 std,
an EnMAP band), hence the mean over bands; 0.75 std lies between the clean windows' 0.37 and the offset's
1.18. With the published statistics (S2 std 1,400-3,600) an offset of 1000 is only 0.3-0.7 std, so the
mean shift cannot see it there: the share of B2-B4 values below the offset (a negative reflectance under
the contract, rare in harmonised data, common over vegetation without the offset) does, whatever the
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from h2crop_core.data.normalise import NormStats
from h2crop_core.mapping.tiling import Tile
from h2crop_core.products.contract import S2_BANDS, S2_CONVENTION, InputContract
from h2crop_core.products.harmonise import OFFSET

if TYPE_CHECKING:  # the reader pulls in the product readers; this module is imported by the settings
    from h2crop_core.mapping.region_reader import RegionReader

#: default threshold: the mean over a modality's bands of the signed shift, in std of the statistics
DEFAULT_DRIFT_SIGMAS = 0.75
#: tiles read for the check (spread over the grid): a few suffice, and it runs before every map
DRIFT_TILES = 4
#: the S2 offset of the contract's convention (stored = 10000 × reflectance + 1000)
S2_OFFSET = OFFSET
#: share of valid B2-B4 values below the offset that says "no offset" (clean <= 5 %, unharmonised >= 29 %)
BELOW_OFFSET_SHARE = 0.15
#: the visible bands checked against the offset: dark over vegetation, so unharmonised they fall below it
VISIBLE = ("B2", "B3", "B4")


def band_shifts(values: np.ma.MaskedArray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band (first axis of ``values``; masked values left out): the raw mean, and its shift from
    ``mean`` in units of ``std`` (NaN for a band with no valid value)."""
    flat = np.ma.masked_invalid(np.ma.asarray(values, dtype=np.float64).reshape(len(values), -1))
    means = flat.mean(axis=1).filled(np.nan)
    return means, (means - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)


def _band_list(names: Sequence[str], picked: np.ndarray) -> str:
    """``B2, B3`` for named bands, ``bands 1-126, 130`` (1-based ranges) for numbered ones."""
    if names:
        return ", ".join(names[i] for i in np.flatnonzero(picked))
    runs: list[list[int]] = []
    for band in (int(i) + 1 for i in np.flatnonzero(picked)):
        if runs and band == runs[-1][-1] + 1:
            runs[-1].append(band)
        else:
            runs.append([band])
    return "bands " + ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _cause(raw: np.ndarray, mean: np.ndarray, below: float | None) -> str:
    """The likely cause of a modality's shift, from its raw band means and the statistics' means."""
    raw, mean = raw[np.isfinite(raw)], mean[np.isfinite(raw)]
    if len(raw) and np.nanmax(np.abs(raw)) < 20:
        return "a 0-1 reflectance scale (values look divided by 10,000)"
    if below is not None and (below >= BELOW_OFFSET_SHARE or -1500 <= np.median(raw - mean) <= -500):
        return (
            f"an unharmonised L2A offset of 1000 ({100 * below:.0f}% of B2-B4 values below 1000, a negative "
            "reflectance under the contract: scenes before processing baseline 04.00 stored without its +1000, "
            "or the offset subtracted; h2crop composite harmonises scenes)"
        )
    ratio = np.median(raw / mean) if np.all(mean) else float("nan")
    return f"another scale or offset (input means {ratio:.3g}x the statistics', {np.median(raw - mean):+.0f} apart)"


def _below_offset(s2: np.ma.MaskedArray, names: Sequence[str]) -> float | None:
    """The share of valid B2-B4 values below the contract's offset (None where unnamed or empty)."""
    rows = [names.index(b) for b in VISIBLE if b in names]
    if not rows:
        return None
    visible = np.ma.asarray(s2).reshape(len(s2), -1)[rows]
    count = visible.count()
    return float((visible < S2_OFFSET).sum() / count) if count else None


def drift_warning(
    s2: np.ma.MaskedArray | None,
    enmap: np.ma.MaskedArray | None,
    stats: NormStats,
    *,
    sigmas: float = DEFAULT_DRIFT_SIGMAS,
    contract: InputContract | None = None,
) -> str | None:
    """One line saying which bands sit far from the statistics and why, or None when the inputs look right.

    Args:
        s2, enmap: raw values, bands first (any shape after), nodata masked; None: not read.
        stats: the checkpoint's normalisation statistics.
        sigmas: the threshold on a modality's mean signed band shift, in std of the statistics (0: off).
        contract: the checkpoint's input contract (band names; the S2 offset test needs its convention).
            None (an old checkpoint): the benchmark's names and convention are assumed for the warning.
    """
    if sigmas <= 0:
        return None
    contract = contract or InputContract()
    s2_names = contract.s2_bands or (S2_BANDS if s2 is not None and len(s2) == len(S2_BANDS) else ())
    parts, causes = [], []
    for label, values, mean, std, names in (
        ("S2", s2, stats.s2_mean, stats.s2_std, s2_names),
        ("EnMAP", enmap, stats.enmap_mean, stats.enmap_std, ()),
    ):
        if values is None or not np.ma.count(values):
            continue
        raw, shift = band_shifts(values, mean, std)
        offset = contract.s2_convention == S2_CONVENTION and label == "S2"
        below = _below_offset(values, names) if offset else None
        average = float(np.nanmean(shift))
        if abs(average) <= sigmas and (below is None or below < BELOW_OFFSET_SHARE):
            continue
        far = np.abs(np.nan_to_num(shift)) > sigmas
        visible = [names.index(b) for b in VISIBLE if b in names]
        picked = far if far.any() else np.isin(np.arange(len(shift)), visible)
        parts.append(f"{label} {_band_list(names, picked)} ({average:+.1f} std on average)")
        causes.append(f"{label}: {_cause(raw, np.asarray(mean, np.float64), below)}")
    if not parts:
        return None
    return (
        f"the inputs do not look like the checkpoint's training data: {'; '.join(parts)} off the checkpoint's "
        f"means; likely cause: {'; '.join(causes)}. Mapping goes on (the map may be wrong); --drift-sigmas 0 turns this "
        "check off"
    )


def sample_raw(
    reader: RegionReader, tiles: Sequence[Tile], stats: NormStats, count: int = DRIFT_TILES
) -> tuple[np.ma.MaskedArray | None, np.ma.MaskedArray | None]:
    """The raw S2 and EnMAP values of ``count`` tiles spread over ``tiles`` (every second row and column),
    bands first, nodata masked: the reader's z-scores turned back into raw values.

    The reader fills missing values with z-score 0 (the band mean), so exact zeros are left out as nodata
    (a real value landing exactly on a float mean is negligible for a mean).

    Returns:
        ``(s2, enmap)``: masked arrays (bands, values); enmap None for a model that does not read it.
    """
    picked = sorted({int(i) for i in np.linspace(0, len(tiles) - 1, min(count, len(tiles)))}) if tiles else []
    s2_parts, enmap_parts = [], []
    for index in picked:
        sample = reader.read(tiles[index])
        z = sample["s2"][..., ::2, ::2]  # (T, bands, n, n)
        gone = (z == 0) | ~sample["valid"][None, None, ::2, ::2]
        raw = z.astype(np.float64) * stats.s2_std[None, :, None, None] + stats.s2_mean[None, :, None, None]
        s2_parts.append(np.ma.masked_array(raw, gone).swapaxes(0, 1).reshape(raw.shape[1], -1))
        if "enmap" in sample:
            e = sample["enmap"][:, ::2, ::2]
            raw = e.astype(np.float64) * stats.enmap_std[:, None, None] + stats.enmap_mean[:, None, None]
            enmap_parts.append(np.ma.masked_array(raw, e == 0).reshape(len(raw), -1))
    s2 = np.ma.concatenate(s2_parts, axis=1) if s2_parts else None
    return s2, (np.ma.concatenate(enmap_parts, axis=1) if enmap_parts else None)


def input_drift(
    reader: RegionReader, tiles: Sequence[Tile], stats: NormStats, contract: InputContract | None, sigmas: float
) -> str | None:
    """:func:`drift_warning` on :func:`sample_raw` of ``reader`` (a
    :class:`~h2crop_core.mapping.region_reader.RegionReader`): nothing is read when ``sigmas`` is 0."""
    if sigmas <= 0 or not tiles:
        return None
    s2, enmap = sample_raw(reader, tiles, stats)
    return drift_warning(s2, enmap, stats, sigmas=sigmas, contract=contract)
