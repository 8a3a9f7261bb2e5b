"""One block of tiles, scanned (labels only: which tiles have enough, which classes they hold) or cut (samples
written). What a Ray task of ``h2crop prepare`` runs; usable without Ray."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from affine import Affine

from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.files import write_atomic
from h2crop_core.mapping.region_reader import RegionReader
from h2crop_core.mapping.sources import MapInputs
from h2crop_core.preparing.cutting import (
    CutOptions,
    class_pixels,
    empty_enmap,
    fill_enmap,
    fill_s2,
    labelled_share,
    pad_months,
    sample_bytes,
    valid_pixels,
)
from h2crop_core.preparing.labels import Parcels, burn_labels
from h2crop_core.preparing.layout import Layout, PrepTile
from h2crop_core.taxonomy import UNLABELLED, Taxonomy


@dataclass
class Sources:
    """Everything a block is cut from.

    Attributes:
        inputs: the rasters (S2 composites, EnMAP, a prior raster).
        months: S2 months read (1..months; the samples hold ``spec.months``, the rest no data).
        parcels, prior_parcels: this year's register and, if given, last year's.
        taxonomy, layout, options, spec: what the classes are, where the tiles lie, how tiles become samples.
    """

    inputs: MapInputs
    months: int
    parcels: Parcels
    prior_parcels: Parcels | None
    taxonomy: Taxonomy
    layout: Layout
    options: CutOptions
    spec: SampleSpec = H2CROP_SPEC

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("s2",) + (("enmap",) if self.inputs.enmap else ()) + (("prior",) if self.inputs.prior else ())

    def reader(self) -> RegionReader:
        return RegionReader(
            self.inputs,
            self.months,
            self.modalities,
            None,
            s2_bands=self.spec.s2_bands,
            enmap_bands=self.spec.enmap_bands,
            factor=self.spec.enmap_factor,
        )


def block_window(tiles: list[PrepTile], tile: int) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the pixels under ``tiles``: a block is read (and burnt) once, then sliced."""
    row, col = min(t.row for t in tiles), min(t.col for t in tiles)
    return row, col, max(t.row for t in tiles) + tile - row, max(t.col for t in tiles) + tile - col


def _block_labels(sources: Sources, window: tuple[int, int, int, int]) -> np.ndarray:
    row, col, height, width = window
    layout, options = sources.layout, sources.options
    return burn_labels(
        sources.parcels, sources.taxonomy, layout.transform, row, col, (height, width), erode=options.erode,
        outside=options.outside,
    )  # fmt: skip


def _in_block(tile: PrepTile, window: tuple[int, int, int, int], size: int, factor: int = 1) -> tuple[slice, ...]:
    """The tile's slices in the block's arrays (on the EnMAP grid with ``factor`` 3)."""
    top, left = (tile.row - window[0]) // factor, (tile.col - window[1]) // factor
    return np.s_[..., top : top + size // factor, left : left + size // factor]


def scan_block(sources: Sources, tiles: list[PrepTile]) -> list[dict]:
    """Per tile: its labelled share and labelled pixels per class (from the parcels alone: no raster read)."""
    window = block_window(tiles, sources.layout.tile)
    labels = _block_labels(sources, window)
    out = []
    for tile in tiles:
        stack = labels[_in_block(tile, window, sources.layout.tile)]
        out.append({"name": tile.name, "labelled": round(labelled_share(stack), 4), "pixels": class_pixels(stack)})
    return out


def cut_block(sources: Sources, tiles: list[PrepTile], h5_dir: Path) -> list[dict]:
    """Write each tile's sample to ``h5_dir/<name>.h5`` (atomically; a tile whose file exists is read back, not
    cut again) or skip it; per tile: ``name``, ``written`` or ``skipped`` (why), and its class pixels. The block
    is read once (a window of every raster) and sliced into its tiles."""
    window = block_window(tiles, sources.layout.tile)
    reader = sources.reader()
    try:
        raw = reader.read_raw(*window)
    finally:
        reader.close()
    block = {
        "raw": raw,
        "label": _block_labels(sources, window),
        "prior": _prior(sources, raw, window),
    }
    return [_cut_tile(sources, block, window, tile, h5_dir) for tile in tiles]


def _cut_tile(sources: Sources, block: dict, window: tuple, tile: PrepTile, h5_dir: Path) -> dict:
    path = h5_dir / f"{tile.name}.h5"
    if path.is_file():
        with h5py.File(path, "r") as handle:
            return {"name": tile.name, "written": True, "pixels": class_pixels(handle["label"][...])}
    layout, spec, options = sources.layout, sources.spec, sources.options
    at = _in_block(tile, window, layout.tile)
    s2 = block["raw"]["s2"][at]
    enmap = (
        block["raw"]["enmap"][_in_block(tile, window, layout.tile, spec.enmap_factor)]
        if "enmap" in block["raw"]
        else None
    )
    valid = valid_pixels(s2, enmap, spec.enmap_factor)
    if valid.mean() < options.min_valid:
        return {"name": tile.name, "written": False, "skipped": "valid data", "valid": round(float(valid.mean()), 4)}
    label = block["label"][at].copy()
    label[:, ~valid] = UNLABELLED
    if labelled_share(label) < options.min_labelled:
        return {"name": tile.name, "written": False, "skipped": "labelled", "labelled": round(labelled_share(label), 4)}
    arrays = {"label": label, "prior": np.ascontiguousarray(block["prior"][at])}
    arrays["s2"], s2_filled = fill_s2(pad_months(s2, spec.months))
    arrays["enmap"], enmap_filled = fill_enmap(enmap) if enmap is not None else (empty_enmap(spec), 1.0)
    attrs = {
        "crs": layout.crs,
        "bounds": np.array(layout.tile_bounds(tile), dtype=np.float64),
        "transform": np.array(tuple(layout.transform @ Affine.translation(tile.col, tile.row))[:6]),
        "s2_filled_share": round(s2_filled, 4),
        "enmap_filled_share": round(enmap_filled, 4),
        "created_by": "h2crop prepare",
    }
    content = sample_bytes(arrays, attrs, compress=() if enmap is not None else ("enmap",))
    write_atomic(path, lambda file: file.write(content))
    return {"name": tile.name, "written": True, "pixels": class_pixels(label)}


def _prior(sources: Sources, raw: dict, window: tuple[int, int, int, int]) -> np.ndarray:
    """Last year's crops under the block: the prior raster, last year's parcels, or unlabelled (255)."""
    row, col, height, width = window
    if "prior" in raw:
        return np.ma.filled(raw["prior"], UNLABELLED).astype(np.uint8)
    if sources.prior_parcels is not None:
        layout = sources.layout
        return burn_labels(
            sources.prior_parcels, sources.taxonomy, layout.transform, row, col, (height, width),
            outside=sources.options.outside,
        )  # fmt: skip
    return np.full((4, height, width), UNLABELLED, dtype=np.uint8)
