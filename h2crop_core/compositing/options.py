"""How a block is composited: the method and the scene-classification classes that are not clear (light: the
settings import it without reading any raster)."""

from __future__ import annotations

from dataclasses import dataclass

#: median / mean of the clear observations, or each pixel from the least cloudy clear scene (block.py says more)
METHODS: tuple[str, ...] = ("median", "mean", "least-cloudy")
#: SCL classes dropped by default: as sits (0 no data, 1 defective, 2 dark area, 3 cloud shadow, 8-9 cloud,
#: 10 thin cirrus); kept: 4 vegetation, 5 bare soil, 6 water, 7 unclassified, 11 snow
DEFAULT_DROP: tuple[int, ...] = (0, 1, 2, 3, 8, 9, 10)


@dataclass(frozen=True)
class CompositeOptions:
    """How a block is composited (the defaults of ``h2crop composite``)."""

    method: str = "median"
    drop: tuple[int, ...] = DEFAULT_DROP
    dilate: int = 1
