"""The compositing actor: its module imports only the compositing library (no torch, no settings), so an actor
starts in a fraction of a second and holds tens of megabytes, not a model's libraries."""

from __future__ import annotations

import os
import time

from h2crop_core.compositing.grid import Block, TargetGrid
from h2crop_core.compositing.options import CompositeOptions
from h2crop_core.memory import peak_rss_mb
from h2crop_core.products.sentinel2 import Scene

#: GDAL's block cache (MB) per actor: JPEG 2000 tiles decoded once serve the neighbouring blocks' reads
GDAL_CACHE_MB = "256"


class BlockWorker:
    """A Ray actor's state: one :class:`~h2crop_core.compositing.block.Compositor` (its open files)."""

    def __init__(self, scenes: list[dict], grid: dict, months: tuple[int, ...], options: dict) -> None:
        os.environ["GDAL_CACHEMAX"] = GDAL_CACHE_MB
        from h2crop_core.compositing.block import Compositor

        self.compositor = Compositor(
            [Scene.from_dict(s) for s in scenes], TargetGrid.from_dict(grid), months, CompositeOptions(**options)
        )

    def run(self, block: Block) -> tuple[int, dict, float, int, float]:
        """(block index, its months, seconds, this actor's pid and peak resident memory in MB)."""
        started = time.perf_counter()
        result = self.compositor.block(block)
        return block.index, result, time.perf_counter() - started, os.getpid(), peak_rss_mb()
