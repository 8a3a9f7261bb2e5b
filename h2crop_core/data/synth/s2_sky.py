"""What lies between the ground and a generated Sentinel-2 scene: clouds with their shadows, thin cirrus, haze,
and the swath edge, drawn on the scene's 20 m grid.

Everything is drawn at 20 m, where L2A's scene classification (``SCL``) lives, so that each 10 m pixel is
cloudy exactly when the 20 m pixel holding it is: ``SCL`` then marks every cloud and shadow pixel of every
band, and the 20 m bands (2×2 means of the 10 m ground) see the same sky as the 10 m ones.

Effects on reflectance: a cloud adds 0.35 (edge) to 0.5 (centre) in every band and is SCL 8 (medium
probability, its rim) or 9 (high, its core); its shadow, offset towards the north-west (the sun stands in the
south-east at the morning overpass), halves the reflectance (SCL 3); thin cirrus adds up to 0.06 (SCL 10);
haze adds 0.02-0.04 in a soft blob that SCL does not mark, as L2A's classification misses thin haze.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: SCL classes the generator writes
SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_SOIL, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 0, 3, 4, 5, 8, 9, 10
#: classes a composite drops (as sits does): no data, defective, dark/topographic shadow, cloud shadow, clouds, cirrus
DROPPED_SCL = (0, 1, 2, 3, 8, 9, 10)
CLOUD_ADD = (0.35, 0.5)
SHADOW_FACTOR = 0.5
HAZE_ADD = (0.02, 0.04)
CIRRUS_ADD = (0.03, 0.06)


@dataclass(frozen=True)
class Blob:
    """An elliptic patch of sky in a scene's 20 m pixel coordinates.

    Attributes:
        kind: ``cloud``, ``cirrus`` or ``haze``.
        cy, cx, ry, rx, angle: centre, radii (pixels) and rotation (radians).
        amplitude: reflectance added at the centre (cirrus, haze; a cloud's brightness is :data:`CLOUD_ADD`).
        shadow: (dy, dx) pixels from the cloud to its shadow, or None (no shadow).
        forced: the cloud over the month's forced spot.
    """

    kind: str
    cy: float
    cx: float
    ry: float
    rx: float
    angle: float = 0.0
    amplitude: float = 0.0
    shadow: tuple[float, float] | None = None
    forced: bool = False

    def field(self, shape: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """(h, w) float32: 1 at the centre falling to 0 at the rim, 0 outside (pixel centres)."""
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) + np.float32(0.5)
        dy, dx = yy - (self.cy + shift[0]), xx - (self.cx + shift[1])
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        u, v = (cos * dx + sin * dy) / self.rx, (cos * dy - sin * dx) / self.ry
        return np.clip(1 - (u * u + v * v), 0, None).astype(np.float32)

    def footprint(self, shape: tuple[int, int]) -> np.ndarray:
        """Where the blob, and its shadow if any, touch: (h, w) bool."""
        touched = self.field(shape) > 0
        if self.shadow is not None:
            touched |= self.field(shape, self.shadow) > 0
        return touched


@dataclass(frozen=True)
class Sky:
    """A scene's sky on its 20 m grid: reflectance = ground × ``factor`` + ``add``; ``scl`` the classes the
    sky imposes (0 where it imposes none); ``hazy`` where haze was added."""

    factor: np.ndarray
    add: np.ndarray
    scl: np.ndarray
    hazy: np.ndarray


def draw_blobs(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    haze: bool,
    cirrus: bool,
    forced: tuple[float, float, float] | None = None,
) -> list[Blob]:
    """The sky of one scene: 1-4 clouds with shadows, then a cirrus and a haze blob if asked, then the forced
    cloud (centre y, x and radius in pixels; no shadow, so only the spot itself stays without a clear view).

    The draws happen in a fixed order whatever is kept, so the same generator gives the same clouds."""
    size = float(min(shape))
    length = rng.uniform(100.0, 250.0) / 20.0  # shadow offset: cloud height over the sun's elevation, in 20 m px
    shadow = (-length * rng.uniform(0.5, 1.0), -length * rng.uniform(0.5, 1.0))
    blobs = []
    for _ in range(int(rng.integers(1, 5))):
        radius = size * rng.uniform(0.06, 0.2)
        blobs.append(
            Blob(
                "cloud",
                cy=rng.uniform(0, shape[0]),
                cx=rng.uniform(0, shape[1]),
                ry=radius * rng.uniform(0.6, 1.0),
                rx=radius,
                angle=rng.uniform(0, np.pi),
                shadow=shadow,
            )
        )
    cirrus_blob = Blob("cirrus", *_centre_and_radii(shape, size, rng, 0.15, 0.3), amplitude=rng.uniform(*CIRRUS_ADD))
    haze_blob = Blob("haze", *_centre_and_radii(shape, size, rng, 0.2, 0.4), amplitude=rng.uniform(*HAZE_ADD))
    blobs += [cirrus_blob] if cirrus else []
    blobs += [haze_blob] if haze else []
    if forced is not None:
        blobs.append(Blob("cloud", forced[0], forced[1], forced[2], forced[2], forced=True))
    return blobs


def _centre_and_radii(
    shape: tuple[int, int], size: float, rng: np.random.Generator, low: float, high: float
) -> tuple[float, float, float, float, float]:
    radius = size * rng.uniform(low, high)
    return (
        rng.uniform(0, shape[0]),
        rng.uniform(0, shape[1]),
        radius * rng.uniform(0.6, 1.0),
        radius,
        rng.uniform(0, np.pi),
    )


def keep_off(blobs: list[Blob], shape: tuple[int, int], keep_clear: np.ndarray) -> list[Blob]:
    """``blobs`` less the clouds and cirrus (the forced cloud excepted) whose footprint or shadow touches
    ``keep_clear`` (h, w bool): whole blobs go, so the clouds kept stay blobs."""
    return [
        blob for blob in blobs if blob.forced or blob.kind == "haze" or not (blob.footprint(shape) & keep_clear).any()
    ]


def render_sky(blobs: list[Blob], shape: tuple[int, int]) -> Sky:
    """The :class:`Sky` of ``blobs`` on a grid of ``shape`` (20 m)."""
    cloud = np.zeros(shape, np.float32)
    shadow = np.zeros(shape, bool)
    cirrus = np.zeros(shape, np.float32)
    haze = np.zeros(shape, np.float32)
    for blob in blobs:
        field = blob.field(shape)
        if blob.kind == "cloud":
            cloud = np.maximum(cloud, field)
            if blob.shadow is not None:
                shadow |= blob.field(shape, blob.shadow) > 0
        elif blob.kind == "cirrus":
            cirrus = np.maximum(cirrus, blob.amplitude * field)
        else:
            haze += blob.amplitude * field
    is_cloud = cloud > 0
    shadow &= ~is_cloud
    is_cirrus = (cirrus > 0) & ~is_cloud
    add = (
        haze
        + np.where(is_cloud, CLOUD_ADD[0] + (CLOUD_ADD[1] - CLOUD_ADD[0]) * cloud, 0)
        + np.where(is_cirrus, cirrus, 0)
    )
    scl = np.zeros(shape, np.uint8)
    scl[shadow] = SCL_SHADOW
    scl[is_cirrus] = SCL_CIRRUS
    scl[is_cloud] = SCL_CLOUD_MEDIUM
    scl[cloud > 0.4] = SCL_CLOUD_HIGH
    return Sky(np.where(shadow, SHADOW_FACTOR, 1.0).astype(np.float32), add.astype(np.float32), scl, haze > 0)


def swath_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(h, w) bool: the part of the grid a scene ending at a swath edge covers; the edge runs roughly
    north-south (tilted up to 15°, as an orbit's ground track), keeping 35-75% of the grid, east or west."""
    h, w = shape
    keep, tilt, east = rng.uniform(0.35, 0.75), np.tan(np.radians(rng.uniform(-15, 15))), rng.random() < 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)
    edge = w * keep + (yy - h / 2) * tilt
    return (xx >= w - edge) if east else (xx < edge)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a square, as compositors dilate SCL masks)."""
    if pixels <= 0:
        return mask
    grown = mask.copy()
    for axis in (0, 1):  # a square is a row then a column dilation
        padded = np.pad(grown, [(pixels, pixels) if a == axis else (0, 0) for a in (0, 1)])
        length = grown.shape[axis]
        grown = np.logical_or.reduce([padded.take(range(k, k + length), axis=axis) for k in range(2 * pixels + 1)])
    return grown
