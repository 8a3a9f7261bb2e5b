"""``splits.png``: where the samples lie, coloured by split over the region, with what was left out and why, so
blocks, buffers and skipped tiles can be checked at a glance."""

from __future__ import annotations

from pathlib import Path

from h2crop_core.files import write_figure_atomic
from h2crop_core.preparing.layout import Layout

#: fill per split and per reason a tile was left out
COLOURS = {
    "train": "#1f77b4",
    "val": "#ff7f0e",
    "test": "#2ca02c",
    "buffer": "#bbbbbb",
    "labelled": "#eeeeee",
    "valid data": "#d62728",
}
LABELS = {"buffer": "left out: buffer", "labelled": "skipped: too few labels", "valid data": "skipped: too little data"}


def write_split_map(path: Path, layout: Layout, fate: dict[str, str], title: str = "") -> Path:
    """Draw every tile of ``layout`` filled by its ``fate`` (a split, or why it was left out; tiles not in
    ``fate`` are left blank), block edges as thick lines, in the grid's coordinates (km)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    figure, axes = plt.subplots(figsize=(7, 7 * layout.height / max(layout.width, 1) + 0.8))
    for tile in layout.tiles():
        if tile.name not in fate:
            continue
        west, south, east, north = (v / 1000 for v in layout.tile_bounds(tile))
        axes.add_patch(Rectangle((west, south), east - west, north - south, color=COLOURS[fate[tile.name]], lw=0))
    for block in {t.block for t in layout.tiles()}:
        west, south, east, north = (v / 1000 for v in layout.block_bounds(block))
        axes.add_patch(Rectangle((west, south), east - west, north - south, fill=False, lw=1.2, ec="black"))
    west, south, east, north = (v / 1000 for v in layout.window_bounds(0, 0, layout.height, layout.width))
    axes.set_xlim(west, east)
    axes.set_ylim(south, north)
    axes.set_aspect("equal")
    axes.set_xlabel(f"x (km, {layout.crs})")
    axes.set_ylabel("y (km)")
    shown = [k for k in COLOURS if k in set(fate.values())]
    counts = {k: sum(1 for v in fate.values() if v == k) for k in shown}
    axes.legend(
        handles=[Patch(color=COLOURS[k], label=f"{LABELS.get(k, k)} ({counts[k]})") for k in shown],
        loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False,
    )  # fmt: skip
    axes.set_title(title or f"samples by split; blocks of {layout.block_km:g} km", fontsize=10)
    figure.tight_layout()
    try:
        return write_figure_atomic(path, figure)
    finally:
        plt.close(figure)
