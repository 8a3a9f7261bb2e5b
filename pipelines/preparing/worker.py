"""What a Ray task of ``h2crop prepare`` runs: one block's scan or cut. Its own module with light imports (no
torch, no settings): every task process imports it, and a fresh process on a small machine would spend seconds
importing what the driver needs."""

from __future__ import annotations

from pathlib import Path

from h2crop_core.preparing.block import Sources, cut_block, scan_block
from h2crop_core.preparing.layout import PrepTile


def run_block(kind: str, sources: Sources, tiles: list[PrepTile], h5_dir: Path) -> list[dict]:
    """One block's ``scan`` (labels only) or ``cut`` (samples written)."""
    return scan_block(sources, tiles) if kind == "scan" else cut_block(sources, tiles, h5_dir)
