"""Which Sentinel-2 L2A scenes the generated products hold: their dates, processing baselines, spacecraft,
orbits, MGRS tiles and pixel grids (one per UTM zone), decided before a pixel is drawn.

The plan is a deterministic function of the seed. Per scene the flags are drawn from the scene's own generator
in a fixed order, so changing one month's scenes changes no other month's.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from affine import Affine

from h2crop_core.mapping.region import RegionError

#: the day ESA's processing baseline 04.00 came in: from it on every L2A band carries BOA_ADD_OFFSET -1000
OFFSET_DATE = date(2022, 1, 25)
#: baselines of the generated scenes: before OFFSET_DATE, and after it (alternating, both carry the offset)
OLD_BASELINE = "03.01"
NEW_BASELINES = ("04.00", "05.09")
#: time of day and relative orbit of the passes over the region's zone and over the neighbouring zone
PASSES = {False: ((10, 50, 31), 51), True: ((10, 30, 21), 8)}
#: months (1-based) whose first scene is from the orbit in the neighbouring UTM zone
OTHER_ZONE_MONTHS = (2, 5, 8, 11)
#: the month with a spot under cloud in every scene (a composite must be nodata there)
FORCED_MONTH = 5
PIXEL_20M = 20.0
_LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class Grid:
    """A scene's pixel grid: the 20 m grid (bands B05-B12 and SCL) and the 10 m grid with the same corner.

    Attributes:
        crs: ``EPSG:326zz`` / ``EPSG:327zz``.
        left, top: the upper-left corner, metres.
        width20, height20: size of the 20 m grid (the 10 m grid is twice as wide and high).
    """

    crs: str
    left: float
    top: float
    width20: int
    height20: int

    def transform(self, resolution: int) -> Affine:
        return Affine(float(resolution), 0.0, self.left, 0.0, -float(resolution), self.top)

    def shape(self, resolution: int) -> tuple[int, int]:
        factor = int(PIXEL_20M) // resolution
        return self.height20 * factor, self.width20 * factor

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        return (
            self.left,
            self.top - PIXEL_20M * self.height20,
            self.left + PIXEL_20M * self.width20,
            self.top,
        )


@dataclass(frozen=True)
class ScenePlan:
    """One scene to generate.

    Attributes:
        month, index: the calendar month (1-based) and the scene's place in it (by date).
        sensed: the acquisition time (UTC, naive).
        baseline: the processing baseline, ``NN.NN``.
        spacecraft: ``S2A`` or ``S2B``.
        crs, tile, relative_orbit: the scene's UTM zone, MGRS tile (``T31TFK``) and orbit.
        other_zone: the scene is in the neighbouring UTM zone.
        partial: the scene ends at a swath edge inside the region.
        haze, cirrus: the scene has a haze blob (not in SCL) / a thin cirrus blob (SCL 10).
        last: the month's last scene: full coverage, no haze, and no cloud over a pixel no earlier scene of
            the month saw clear, so every pixel but the forced spot gets a clear observation.
        zip_suffix: ``""`` for a SAFE folder, else the zip's suffix (``.SAFE.zip`` or ``.zip``).
    """

    month: int
    index: int
    sensed: datetime
    baseline: str
    spacecraft: str
    crs: str
    tile: str
    relative_orbit: int
    other_zone: bool
    partial: bool
    haze: bool
    cirrus: bool
    last: bool
    zip_suffix: str = ""

    @property
    def stamp(self) -> str:
        return self.sensed.strftime("%Y%m%dT%H%M%S")

    @property
    def offset(self) -> float:
        """BOA_ADD_OFFSET of every band: -1000 from baseline 04.00 on, 0 before."""
        return -1000.0 if _baseline_tuple(self.baseline) >= (4, 0) else 0.0

    @property
    def absolute_orbit(self) -> int:
        # about 14.3 orbits a day since each satellite's first orbit: only a plausible number for the names
        start = datetime(2015, 6, 23) if self.spacecraft == "S2A" else datetime(2017, 3, 7)
        return 1 + int((self.sensed - start).total_seconds() / 86400 * 14.3)

    @property
    def generated(self) -> datetime:
        """The processing time: the afternoon of the acquisition day."""
        return self.sensed.replace(hour=17, minute=0, second=0)

    @property
    def name(self) -> str:
        """The product name, ``S2A_MSIL2A_20220615T105031_N0509_R051_T31TFK_20220615T170000``."""
        return (
            f"{self.spacecraft}_MSIL2A_{self.stamp}_N{self.baseline.replace('.', '')}_R{self.relative_orbit:03d}_"
            f"{self.tile}_{self.generated.strftime('%Y%m%dT%H%M%S')}"
        )

    @property
    def granule(self) -> str:
        return f"L2A_{self.tile}_A{self.absolute_orbit:06d}_{self.stamp}"


def _baseline_tuple(baseline: str) -> tuple[int, int]:
    major, minor = baseline.split(".")
    return int(major), int(minor)


def utm_zone(crs: str, where: str) -> tuple[int, bool]:
    """(zone, south) of a WGS 84 UTM CRS ``EPSG:326zz`` / ``EPSG:327zz``.

    Raises:
        RegionError: any other CRS (naming ``where``): the products are in UTM zones, as Sentinel-2's tiles.
    """
    code = crs.upper().removeprefix("EPSG:")
    if not code.isdigit() or not (32601 <= int(code) <= 32660 or 32701 <= int(code) <= 32760):
        raise RegionError(
            f"{where}: crs {crs!r}; generated Sentinel-2 products need a WGS 84 UTM zone (EPSG:326zz/327zz)"
        )
    return int(code) % 100, int(code) >= 32700


def neighbour_crs(crs: str, where: str) -> str:
    """The UTM zone east of ``crs`` (west of zone 60), same hemisphere."""
    zone, south = utm_zone(crs, where)
    other = zone + 1 if zone < 60 else zone - 1
    return f"EPSG:{(32700 if south else 32600) + other}"


def mgrs_tile(crs: str, x: float, y: float, latitude: float) -> str:
    """The MGRS tile id (``T31TFK``) of a point at ``(x, y)`` in the UTM ``crs`` and ``latitude`` degrees.

    The 100 km square letters follow the MGRS lettering (AA scheme, as Sentinel-2's tiling grid).
    """
    zone, south = utm_zone(crs, "mgrs")
    band = _LATITUDE_BANDS[min(max(int((latitude + 80) // 8), 0), len(_LATITUDE_BANDS) - 1)]
    column = _COLUMN_SETS[(zone - 1) % 3][min(max(int(x // 100_000) - 1, 0), 7)]
    northing = y + (10_000_000 if south and y < 0 else 0)
    row = _ROW_LETTERS[(int(northing // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"T{zone:02d}{band}{column}{row}"


def scene_days(year: int, month: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` distinct days of a month, spread over it; the month holding 25 January 2022 gets its last
    scene after that day and the others before, so it has scenes of both baselines."""
    last_day = calendar.monthrange(year, month)[1]
    if date(year, month, 1) <= OFFSET_DATE <= date(year, month, last_day):
        before = _spread(1, OFFSET_DATE.day - 1, count - 1, rng)
        return before + [min(last_day, OFFSET_DATE.day + 3)]
    return _spread(1, last_day, count, rng)


def _spread(first: int, last: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` distinct days in ``first..last``, one in each of ``count`` equal parts of that span."""
    step = (last - first + 1) / count
    return [first + int(step * k + rng.uniform(0, max(step - 1, 0))) for k in range(count)]


def snapped_grid(crs: str, bounds: tuple[float, float, float, float]) -> Grid:
    """The 20 m-aligned grid in ``crs`` covering ``bounds`` (given in that CRS)."""
    left = math.floor(bounds[0] / PIXEL_20M) * PIXEL_20M
    bottom = math.floor(bounds[1] / PIXEL_20M) * PIXEL_20M
    right = math.ceil(bounds[2] / PIXEL_20M) * PIXEL_20M
    top = math.ceil(bounds[3] / PIXEL_20M) * PIXEL_20M
    return Grid(crs, left, top, round((right - left) / PIXEL_20M), round((top - bottom) / PIXEL_20M))


def plan_month(
    year: int, month: int, count: int, seed: int, tiles: dict[bool, tuple[str, str]], months_with_other: tuple
) -> list[ScenePlan]:
    """The scenes of one month, by date.

    Args:
        tiles: for ``other_zone`` False/True, the (CRS, MGRS tile) of the scenes.
        months_with_other: months whose first scene is in the neighbouring zone.
    """
    rng = np.random.default_rng([seed, month, 2801])
    days = scene_days(year, month, count, rng)
    plans = []
    for index, day in enumerate(days):
        # drawn whatever the flags turn out to be, so every scene consumes the same draws
        partial_draw, haze_draw, cirrus_draw, second = rng.random(), rng.random(), rng.random(), rng.integers(0, 9)
        other = month in months_with_other and index == 0
        last = index == count - 1
        (hour, minute, sec), orbit = PASSES[other]
        sensed = datetime(year, month, day, hour, minute, sec + int(second))
        if sensed.date() < OFFSET_DATE:
            baseline = OLD_BASELINE
        elif sensed.date() < OFFSET_DATE + timedelta(days=30):
            baseline = NEW_BASELINES[0]  # the first weeks after the switch: 04.00, as delivered then
        else:
            baseline = NEW_BASELINES[(month + index) % 2]
        crs, tile = tiles[other]
        plans.append(
            ScenePlan(
                month=month,
                index=index,
                sensed=sensed,
                baseline=baseline,
                spacecraft=("S2A", "S2B")[(month + index) % 2],
                crs=crs,
                tile=tile,
                relative_orbit=orbit,
                other_zone=other,
                partial=not last and not other and partial_draw < 0.3,
                haze=not last and haze_draw < 0.4,
                cirrus=cirrus_draw < 0.3,
                last=last,
            )
        )
    return plans
