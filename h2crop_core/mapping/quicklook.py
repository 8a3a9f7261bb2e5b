"""``quicklook.png``: a map's levels side by side in the taxonomy's colours with a legend of each level's most
frequent classes, and the level-4 (finest) confidence, read from the COGs' overviews."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.enums

from h2crop_core.files import write_figure_atomic
from h2crop_core.taxonomy import Taxonomy

LEGEND_CLASSES = 8


def _overview(path: Path, max_side: int, resampling: rasterio.enums.Resampling) -> np.ma.MaskedArray:
    with rasterio.open(path) as src:
        scale = max(1, -(-max(src.height, src.width) // max_side))
        return src.read(
            1, out_shape=(max(1, src.height // scale), max(1, src.width // scale)), resampling=resampling, masked=True
        )


def write_quicklook(
    folder: Path,
    files: Mapping[str, str],
    levels: Sequence[int],
    taxonomy: Taxonomy,
    areas_ha: Mapping[str, Mapping[str, float]],
    max_side: int = 1024,
) -> Path:
    """Write ``folder/quicklook.png`` from the COGs named in ``files`` (``level<k>``, ``confidence_level<k>``).

    Args:
        areas_ha: per ``level<k>``, hectares by class name (the map's summary): the legend lists the
            :data:`LEGEND_CLASSES` largest classes with their share of the mapped area.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = len(levels) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 6.2), squeeze=False)
    for ax, level in zip(axes[0], levels):
        ids = _overview(folder / files[f"level{level}"], max_side, rasterio.enums.Resampling.mode)
        colours = taxonomy.colours(level).astype(np.float64) / 255
        image = np.ones((*ids.shape, 3))  # no data: white
        inside = ~np.ma.getmaskarray(ids) & (ids.data < len(colours))
        image[inside] = colours[ids.data[inside]]
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"level {level} ({taxonomy.num_classes[level - 1] - 1} classes)")
        ax.set_axis_off()
        names = taxonomy.class_names(level)
        area = areas_ha.get(f"level{level}", {})
        total = sum(area.values()) or 1.0
        largest = sorted(area, key=area.get, reverse=True)[:LEGEND_CLASSES]
        handles = [
            Patch(color=colours[names.index(name)], label=f"{name[:22]} {_percent(area[name] / total)}")
            for name in largest
        ]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=7, frameon=False, ncol=1)
    ax = axes[0][-1]
    finest = levels[-1]
    confidence = _overview(folder / files[f"confidence_level{finest}"], max_side, rasterio.enums.Resampling.average)
    shown = ax.imshow(np.ma.masked_equal(confidence, 0) / 255, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"level {finest} confidence")
    ax.set_axis_off()
    fig.colorbar(
        shown, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04, label="probability of the mapped class"
    )
    fig.tight_layout()
    path = write_figure_atomic(folder / "quicklook.png", fig)
    plt.close(fig)
    return path


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.005 else "<1%"
