"""A picture of a generated world: what each level-1 family's classes look like to EnMAP, and their NDVI
over the year as Sentinel-2 sees it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from h2crop_core.data.synth.world import SyntheticWorld
from h2crop_core.files import write_if_changed
from h2crop_core.products.wavelengths import BENCHMARK_ENMAP_NM

#: indices of B4 (red) and B8 (near infrared) in the model's S2 band order
RED, NIR = 2, 6
MONTH_NAMES = "JFMAMJJASOND"


def world_quicklook(world: SyntheticWorld, path: str | Path) -> Path:
    """Write a PNG of ``world``: one panel per level-1 class with its leaves' EnMAP spectra (the mean of each
    leaf's variants, before the atmosphere), and one of every leaf's NDVI over the months, coloured by its
    level-1 class. Unchanged bytes leave the file (and its time) as it was.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = world.taxonomy.paths
    level1 = [int(i) for i in np.unique(paths[1:, 0])]
    columns = min(4, len(level1) + 1)
    rows = -(-(len(level1) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    wavelengths, order = _enmap_axis(world.spec.enmap_bands)
    spectra = np.where(order < 0, np.nan, world.enmap_signature[:, order])
    for i, node in enumerate(level1):
        ax = axes.flat[i]
        leaves = np.flatnonzero(paths[:, 0] == node)
        for leaf in leaves:
            ax.plot(wavelengths, spectra[leaf], lw=0.6, color=colours(i % 10), alpha=0.8)
        ax.plot(wavelengths, spectra[0], lw=0.8, color="0.3", ls="--", label="background")
        ax.set_title(f"{_label(world, node)}: {len(leaves)} leaves", fontsize=9)
        ax.set_xlabel("wavelength (nm)" if world.spec.enmap_bands == len(BENCHMARK_ENMAP_NM) else "band")
        ax.set_ylabel("reflectance")
        ax.set_ylim(0, max(0.6, float(np.nanmax(spectra)) * 1.05))
    axes.flat[0].legend(fontsize=7, loc="upper left")
    _ndvi_panel(axes.flat[len(level1)], world, level1, colours)
    for ax in axes.flat[len(level1) + 1 :]:
        ax.axis("off")
    figure.suptitle(f"{world.kind} world: EnMAP spectra per level-1 class, Sentinel-2 NDVI per class", fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    write_if_changed(path, buffer.getvalue())
    return Path(path)


def _ndvi_panel(ax, world: SyntheticWorld, level1: list[int], colours) -> None:
    """Every leaf's NDVI (of its mean S2 spectrum) over the months, coloured by level-1 class."""
    s2 = world.s2_signature
    ndvi = (s2[..., NIR] - s2[..., RED]) / np.maximum(s2[..., NIR] + s2[..., RED], 1e-6)
    months = np.arange(s2.shape[1])
    paths = world.taxonomy.paths
    for i, node in enumerate(level1):
        for j, leaf in enumerate(np.flatnonzero(paths[:, 0] == node)):
            label = _label(world, node) if j == 0 else None
            ax.plot(months, ndvi[leaf], lw=0.7, color=colours(i % 10), alpha=0.7, label=label)
    ax.plot(months, ndvi[0], lw=1.0, color="0.3", ls="--", label="background")
    ax.set_xticks(months, [MONTH_NAMES[m % 12] for m in months])
    ax.set_ylim(-0.1, 1.0)
    ax.set_title("NDVI (B8, B4) per leaf", fontsize=9)
    ax.legend(fontsize=6, loc="lower center", ncol=2)


def _label(world: SyntheticWorld, node: int) -> str:
    """A level-1 class's name, with its family where a PROSAIL world matched it to one."""
    name = world.taxonomy.names[0][node].strip()
    family = world.canopy.family[node] if world.canopy is not None else None
    return f"{name} ({family})" if family and family != name else name


def _enmap_axis(bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The x values of the EnMAP bands in ascending order and the band indices that put them in that order,
    with a -1 (and a NaN x) where more than 25 nm lie between two bands (the absorption bands the benchmark
    drops, EnMAP's gap near 1,800-1,900 nm), so that no line is drawn across a gap. Band numbers when the
    bands are not the benchmark's 218."""
    if bands != len(BENCHMARK_ENMAP_NM):
        return np.arange(bands, dtype=float), np.arange(bands)
    wavelengths = np.array(BENCHMARK_ENMAP_NM)
    order = np.argsort(wavelengths, kind="stable")  # the VNIR and SWIR detectors overlap near 900-1000 nm
    gaps = np.flatnonzero(np.diff(wavelengths[order]) > 25) + 1
    order = np.insert(order, gaps, -1)
    return np.where(order < 0, np.nan, wavelengths[order]), order
