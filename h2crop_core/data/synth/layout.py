"""Where things lie in a generated scene: the parcels, the clouds over them, and the bare soil within them.

Bare soil within fields: a real field is not one spectrum. Emergence gaps, waterlogged or compacted patches,
wheel tracks and stony ground let the soil show through part of the canopy, in patches of a few pixels and
from pixel to pixel; the classic hyperspectral crop scenes owe much of their difficulty to it (early-season
maize and soybean stands cover a fraction of the ground). :func:`gap_field` gives each 10 m pixel its share
of bare soil; :meth:`~h2crop_core.data.synth.world.SyntheticWorld.render` mixes the canopy's spectrum with
its soil's by that share (a linear mixture: the gaps are larger than a plant).
"""

from __future__ import annotations

import numpy as np

#: of a gap field's pixel-to-pixel spread, the shares of the patches (smooth over PATCH_PX pixels) and of
#: single pixels; a parcel's mean bare share is Beta-distributed around the field's mean
PATCH_SHARE, PIXEL_SHARE, PATCH_PX = 0.6, 0.8, 2.0
#: the most of a pixel that is bare soil
MAX_GAP = 0.9


def gap_field(parcel: np.ndarray, seed: int, mean: float) -> np.ndarray:
    """(H, W) float32 share of bare soil in each pixel of the parcel map ``parcel`` (0 off the parcels).

    A parcel draws its own mean share (Beta with mean ``mean``: some fields are closed, some patchy); its
    pixels vary around it by ``mean`` times a mix of patches and pixel noise, clipped to [0, MAX_GAP]. A
    deterministic function of ``seed`` and the map (so strips of one scene agree when drawn alike).
    """
    from scipy.ndimage import gaussian_filter

    if mean <= 0:
        return np.zeros(parcel.shape, np.float32)
    rng = np.random.default_rng([seed, 0x6A95])
    level = rng.beta(2.0, 2.0 * (1 - mean) / mean, int(parcel.max()) + 1)
    patches = gaussian_filter(rng.standard_normal(parcel.shape), PATCH_PX, mode="reflect")
    patches /= max(float(patches.std()), 1e-12)
    pixels = rng.standard_normal(parcel.shape)
    gaps = np.clip(level[parcel] + mean * (PATCH_SHARE * patches + PIXEL_SHARE * pixels), 0.0, MAX_GAP)
    gaps[parcel == 0] = 0.0
    return gaps.astype(np.float32)


def add_clouds(scene: dict, rng: np.random.Generator, months: int, probability: float = 0.12) -> None:
    """Give some months a cloud: a soft blob covering part of the scene (S2 only; EnMAP is cloud-free)."""
    h, w = scene["parcel"].shape
    clouds = np.zeros((months, h, w), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for m in range(months):
        if rng.random() < probability:
            cy, cx, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.15, 0.4) * max(h, w)
            clouds[m] = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))).astype(np.float32)
    scene["clouds"] = clouds


def voronoi_parcels(
    height: int, width: int, rng: np.random.Generator, spacing: float = 22.0, border: float = 1.2
) -> tuple[np.ndarray, int]:
    """Convex polygonal parcels: an anisotropic Voronoi tessellation with a background margin between cells.

    Seeds sit on a jittered grid in a randomly rotated and stretched coordinate frame, so each pixel only
    compares the seeds of its 3×3 neighbouring grid cells: linear in the number of pixels, any raster size.

    Returns:
        (parcel map (H, W) int32 with 0 on borders and parcels numbered from 1, number of parcels).
    """
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(1.0, 2.2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = np.diag([1.0 / stretch, 1.0]) @ rotation
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    q = np.einsum("ij,jhw->ihw", transform, np.stack([yy, xx]))
    origin = q.reshape(2, -1).min(axis=1) - spacing
    cell = np.floor((q - origin[:, None, None]) / spacing).astype(np.int64)
    grid_shape = cell.reshape(2, -1).max(axis=1) + 3
    jitter = rng.uniform(0.1, 0.9, (grid_shape[0], grid_shape[1], 2))
    best = np.full((height, width), np.inf)
    second = np.full((height, width), np.inf)
    owner = np.zeros((height, width), dtype=np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cy, cx = np.clip(cell[0] + dy, 0, grid_shape[0] - 1), np.clip(cell[1] + dx, 0, grid_shape[1] - 1)
            seed_y = origin[0] + (cy + jitter[cy, cx, 0]) * spacing
            seed_x = origin[1] + (cx + jitter[cy, cx, 1]) * spacing
            dist = np.hypot(q[0] - seed_y, q[1] - seed_x)
            cell_id = cy * grid_shape[1] + cx
            closer = dist < best
            same = cell_id == owner
            second = np.where(closer & ~same, best, np.where(~closer & ~same, np.minimum(second, dist), second))
            owner = np.where(closer, cell_id, owner)
            best = np.where(closer, dist, best)
    _, parcel = np.unique(owner, return_inverse=True)
    parcel = parcel.reshape(height, width).astype(np.int32) + 1
    parcel[(second - best) < border] = 0
    return parcel, int(parcel.max())
