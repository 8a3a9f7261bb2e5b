"""A synthetic georeferenced region for the mapping stage: S2, EnMAP, prior and label GeoTIFFs in the region
format of :mod:`h2crop_core.mapping.region`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth.layout import add_clouds
from h2crop_core.data.synth.register import CROSSWALK_FILE, PRIOR_PARCELS_FILE, write_registers
from h2crop_core.data.synth.user_files import PARCELS_FILE
from h2crop_core.data.synth.world import SyntheticWorld
from h2crop_core.errors import SettingError
from h2crop_core.files import PARTIAL, write_text_atomic
from h2crop_core.mapping.region import MANIFEST, REGION_FILES

#: UTM 31N, where most H2Crop tiles lie.
DEFAULT_CRS = "EPSG:32631"
DEFAULT_ORIGIN = (600_000.0, 5_000_000.0)  # upper-left corner, metres
S2_PIXEL_M = 10.0


def synthesize_region(
    out_dir: str | Path,
    world: SyntheticWorld,
    size: int = 1008,
    *,
    seed: int = 0,
    crs: str = DEFAULT_CRS,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    strip_rows: int = 96,
    progress: bool = True,
) -> dict:
    """Write ``s2.tif`` (12 months × 10 bands at 10 m, month-major), ``enmap.tif`` (bands at 30 m on the same
    extent), ``prior.tif`` and ``label.tif`` (4 levels, uint8, 255 = nodata/unlabelled), ``parcels.gpkg``
    (the parcels with their true crop and their codes, in Lambert-93), ``parcels_prior.gpkg`` (last year's),
    ``crosswalk.csv`` (national codes -> HCAT3: :mod:`~h2crop_core.data.synth.register`) and ``region.json``.

    Rasters are written strip by strip (memory stays flat in the region size) to temporary names and
    renamed when complete; ``region.json`` is written last, so its presence marks a complete region.

    Args:
        out_dir: the region folder (created; an existing region there is replaced).
        world: the classes and their signatures.
        size: side of the region in S2 pixels, a multiple of the EnMAP factor.
        seed: the scene is a deterministic function of it.
        crs, origin: the projection and the upper-left corner (metres).
        strip_rows: S2 rows rendered at a time, a multiple of the EnMAP factor.

    Returns:
        The manifest plus ``dir``, the folder.
    """
    spec = world.spec
    factor = spec.enmap_factor
    if size % factor or strip_rows % factor:
        raise SettingError(f"region size ({size}) and strip rows ({strip_rows}) must be multiples of {factor}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new region is complete, there is none
    rng = np.random.default_rng([seed, 10_000_019])
    scene = world.scene(size, size, rng)
    scene["seed"] = int(rng.integers(2**31))
    add_clouds(scene, rng, spec.months, probability=0.1)
    staging = {key: out / f".{name}{PARTIAL}" for key, name in REGION_FILES.items()}
    try:
        _write_rasters(staging, world, scene, rng, _profiles(spec, size, crs, origin), strip_rows, progress)
    except BaseException:
        for path in staging.values():
            path.unlink(missing_ok=True)
        raise
    for key, name in REGION_FILES.items():
        staging[key].replace(out / name)
    transform = _profiles(spec, size, crs, origin)["s2"]["transform"]
    write_registers(out, scene, world.taxonomy, transform, crs, seed)
    manifest = {
        "files": dict(REGION_FILES),
        "parcels": PARCELS_FILE,
        "prior_parcels": PRIOR_PARCELS_FILE,
        "crosswalk": CROSSWALK_FILE,
        "crs": crs,
        "size": size,
        "s2_pixel_m": S2_PIXEL_M,
        "enmap_factor": factor,
        "months": spec.months,
        "s2_bands": spec.s2_bands,
        "enmap_bands": spec.enmap_bands,
        "origin": list(origin),
        "seed": seed,
    }
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return {"dir": str(out), **manifest}


def _profiles(spec: SampleSpec, size: int, crs: str, origin: tuple[float, float]) -> dict[str, dict]:
    """rasterio profiles of the four rasters: S2, prior and label on the 10 m grid, EnMAP on it coarsened."""
    factor = spec.enmap_factor
    s2_transform = Affine(S2_PIXEL_M, 0.0, origin[0], 0.0, -S2_PIXEL_M, origin[1])
    enmap_transform = Affine(S2_PIXEL_M * factor, 0.0, origin[0], 0.0, -S2_PIXEL_M * factor, origin[1])
    common = {"driver": "GTiff", "crs": crs, "tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "pixel"}
    # four uint8 bands would be RGBA to GDAL (band 4 an alpha mask): they are four levels of class ids
    labels = dict(
        common,
        width=size,
        height=size,
        count=4,
        dtype="uint8",
        transform=s2_transform,
        nodata=255,
        photometric="MINISBLACK",
        alpha="NO",
    )
    return {
        "s2": dict(
            common,
            width=size,
            height=size,
            count=spec.months * spec.s2_bands,
            dtype="int16",
            transform=s2_transform,
            nodata=-32768,
        ),
        "enmap": dict(
            common,
            width=size // factor,
            height=size // factor,
            count=spec.enmap_bands,
            dtype="int16",
            transform=enmap_transform,
            nodata=-32768,
        ),
        "prior": labels,
        "label": labels,
    }


def _write_rasters(
    paths: dict[str, Path],
    world: SyntheticWorld,
    scene: dict,
    rng: np.random.Generator,
    profiles: dict[str, dict],
    strip_rows: int,
    progress: bool,
) -> None:
    """Write the scene's rasters to ``paths`` (by role): labels at once, S2 and EnMAP strip by strip."""
    from tqdm.auto import tqdm

    spec = world.spec
    factor = spec.enmap_factor
    size = profiles["s2"]["width"]
    handles = {key: rasterio.open(paths[key], "w", **profiles[key]) for key in REGION_FILES}
    try:
        handles["s2"].descriptions = tuple(
            f"month{m + 1:02d}_band{b + 1:02d}" for m in range(spec.months) for b in range(spec.s2_bands)
        )
        handles["s2"].update_tags(
            months=spec.months, s2_bands=spec.s2_bands, layout="month-major: band = month * s2_bands + band"
        )
        for key in ("prior", "label"):
            handles[key].descriptions = tuple(f"level{k + 1}" for k in range(4))
            handles[key].write(world.label_stack(scene, key))
        for top in tqdm(
            range(0, size, strip_rows), desc="region", unit="strip", disable=not progress, dynamic_ncols=True
        ):
            rows = slice(top, min(top + strip_rows, size))
            height = rows.stop - rows.start
            s2, enmap = world.render(scene, rows, rng)
            handles["s2"].write(s2.reshape(-1, height, size), window=Window(0, top, size, height))
            handles["enmap"].write(enmap, window=Window(0, top // factor, size // factor, height // factor))
    finally:
        for handle in handles.values():
            handle.close()
