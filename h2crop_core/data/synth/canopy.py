"""A generated world whose spectra come from a canopy radiative-transfer model: PROSAIL.

PROSAIL couples the leaf model PROSPECT-D (a leaf's reflectance and transmittance from its chlorophyll,
carotenoids, anthocyanins, brown pigment, water, dry matter and structure; Féret et al. 2017, Remote Sens.
Environ. 193:204) with the canopy model 4SAIL (a turbid medium of leaves of a given area index and angle
distribution over a soil, seen from one direction and lit from another; Verhoef et al. 2007, IEEE TGRS
45:1808). The implementation is J. Gómez-Dans's ``prosail`` package (PyPI ``prosail`` 2.0.5, GPL-3.0), which
returns the bidirectional reflectance factor from 400 to 2500 nm at 1 nm.

Each class of a taxonomy gets a phenology of PROSAIL inputs over the year (:mod:`.phenology`), built down
the tree: a level-1 class takes the archetype of its family (matched by name, else assigned in turn) and an
arable one sends its level-2 classes to crop types (winter cereal, summer crop, oilseed, ...); every finer
class departs from its parent by a draw whose spread shrinks with the level (timing by a month between crop
types and a week between varieties, leaf area, biochemistry, soil). About half of the sibling groups at
levels 3 and 4 are *faint*: their members (and everything below them) share their parent's season and
differ only by a trait that shows around the EnMAP acquisition, along the direction of leaf biochemistry
that the Sentinel-2 bands see least relative to EnMAP's (the smallest generalised eigenvector of the two
sensors' Jacobians at the parent's state), so that Sentinel-2 alone confuses them while EnMAP separates them.
Neighbouring members lie a fixed EnMAP difference apart along it, as far as PROSPECT's domain allows. Such
groups are drawn only where the parent has a canopy (leaf area at least 1) at the acquisition.

Within a class, fields vary: :data:`VARIANTS` departures from the class's traits (sowing date, leaf area,
chlorophyll, water, soil), drawn once and shared by all classes so that class means differ only by their
traits, give as many spectra per month; a parcel of the class mixes them with its own weights
(:meth:`~h2crop_core.data.synth.world.SyntheticWorld.render`).

Geometry: every month is seen as a Sentinel-2 summer acquisition at mid-latitude: the sun 30° from the
zenith (47° N, mid-June, 10:30 local solar time, when Sentinel-2 passes), the sensor 5° off nadir, and a
relative azimuth of 145° (the sun at 135°, the sensor west of the pixel at 280°). The bands are Gaussian
responses (:mod:`.responses`). Everything is a deterministic function of the taxonomy and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth.phenology import (
    ARABLE_PATTERNS,
    CROP_TYPES,
    FAMILIES,
    LEAF_FLOOR,
    LEVEL1_PATTERNS,
    PROSAIL_INPUTS,
    P,
    archetype,
    match,
    perturb,
    prosail_inputs,
    variation,
    vary,
)
from h2crop_core.data.synth.responses import enmap_responses, s2_responses
from h2crop_core.errors import SettingError
from h2crop_core.taxonomy import NUM_LEVELS, Taxonomy

SUN_ZENITH_DEG = 30.0
VIEW_ZENITH_DEG = 5.0
RELATIVE_AZIMUTH_DEG = 145.0
#: the month (0-based) EnMAP sees the scene: June, as in the drawn world
ENMAP_MONTH = 5
#: spectra per class and month: the parcel-to-parcel variety within a class
VARIANTS = 6
MONTHS = 12
#: the leaf inputs a faint group's members differ by, and the size of one unit of each (a varietal difference)
STAGE_INPUTS = ("cab", "car", "ant", "cw", "cm", "n")
STAGE_UNITS = np.array([6.0, 1.5, 1.0, 0.002, 0.001, 0.1])
#: how far apart neighbouring members of a faint group lie: this RMS difference over the EnMAP bands (the
#: trait's effect on a canopy depends on its state), at most STAGE_MAX_STEP units; and how long (sd,
#: months) the trait shows around the acquisition
STAGE_STEP_RMS = 0.01
STAGE_MAX_STEP = 8.0
STAGE_SD_MONTHS = 0.3
#: a faint group's members vary by this fraction of the usual spread in everything else
FAINT_SCALE = 0.1


@dataclass
class Canopy:
    """The PROSAIL world of a taxonomy: each class's spectra and the inputs they come from.

    Attributes:
        s2: (n_leaves + 1, variants, months, 10) Sentinel-2 reflectance per class, variant and month.
        enmap: (n_leaves + 1, variants, 218) EnMAP reflectance at the acquisition month (before the atmosphere).
        inputs: (n_leaves + 1, variants, 12, len(PROSAIL_INPUTS)) the ``prosail.run_prosail`` inputs.
        faint_groups: {(level index 2|3, parent id)}: the sibling groups drawn faint.
        family: per level-1 id, its family (index 0: ``background``).
        crop_type: per level-4 id, the archetype its traits started from.
        soil_s2, soil_enmap: as ``s2`` and ``enmap``, the soil under each class and variant (its bare
            reflectance: what shows through gaps in the canopy).
    """

    s2: np.ndarray
    enmap: np.ndarray
    inputs: np.ndarray
    faint_groups: frozenset
    family: tuple[str, ...]
    crop_type: tuple[str, ...]
    soil_s2: np.ndarray
    soil_enmap: np.ndarray


def require_prosail() -> None:
    """Refuse, in one line, a prosail world where the ``prosail`` package is not installed (an extra: GPL-3.0)."""
    import importlib.util

    if importlib.util.find_spec("prosail") is None:
        raise SettingError(
            "world=prosail needs the prosail package (PROSPECT-D + 4SAIL; GPL-3.0, so not installed with h2crop): "
            "pip install 'h2crop[prosail]'"
        )


def canopy_world(taxonomy: Taxonomy, spec: SampleSpec, seed: int = 0, variants: int = VARIANTS) -> Canopy:
    """The PROSAIL spectra of ``taxonomy``'s classes for samples of ``spec`` (its 10 S2 bands, its 218 EnMAP
    bands, at most 12 months)."""
    if spec.s2_bands != 10 or spec.enmap_bands != 218 or spec.months > MONTHS:
        raise SettingError(
            f"world=prosail renders the benchmark's bands (10 S2, 218 EnMAP) over at most 12 months; the sample "
            f"spec has {spec.s2_bands} S2 bands, {spec.enmap_bands} EnMAP bands and {spec.months} months"
        )
    rng = np.random.default_rng([seed, 0x5A11])
    responses = (s2_responses(), enmap_responses())
    traits, family, crop_type = _tree_traits(taxonomy, rng)
    stage, faint_groups = _faint_stages(taxonomy.paths, traits, rng, responses)
    t = np.arange(MONTHS) + 0.5
    window = np.exp(-0.5 * ((t - ENMAP_MONTH - 0.5) / STAGE_SD_MONTHS) ** 2)[:, None]
    n = len(taxonomy.paths)
    inputs = np.zeros((n, variants, MONTHS, len(PROSAIL_INPUTS)))
    spread = variation(rng, variants)
    for leaf in range(n):
        leaf_traits = archetype("background") if leaf == 0 else traits[NUM_LEVELS - 1][leaf]
        for v, row in enumerate(vary(leaf_traits, spread)):
            inputs[leaf, v] = prosail_inputs(row, t, window * stage[leaf])
    bare = inputs.copy()
    bare[..., P["lai"]] = 0.0  # PROSAIL's soil alone: cheap (no leaves to model)
    s2, enmap = _bands(reflectance(inputs.reshape(-1, len(PROSAIL_INPUTS))), n, variants, spec, responses)
    soil_s2, soil_enmap = _bands(reflectance(bare.reshape(-1, len(PROSAIL_INPUTS))), n, variants, spec, responses)
    return Canopy(s2, enmap, inputs, frozenset(faint_groups), family, crop_type, soil_s2, soil_enmap)


def _bands(spectra: np.ndarray, n: int, variants: int, spec: SampleSpec, responses: tuple) -> tuple:
    """S2 (n, variants, months, bands) over the sample's months and EnMAP (n, variants, bands) at the
    acquisition, of PROSAIL spectra (n * variants * MONTHS, 2101)."""
    spectra = spectra.reshape(n, variants, MONTHS, -1)
    return spectra[:, :, : spec.months] @ responses[0].T, spectra[:, :, ENMAP_MONTH] @ responses[1].T


def reflectance(inputs: np.ndarray) -> np.ndarray:
    """(rows, 2101) PROSAIL's bidirectional reflectance (400-2500 nm) of each row of ``inputs`` (rows,
    len(PROSAIL_INPUTS)) under the world's geometry: PROSPECT-D, the campbell leaf angle distribution
    (``lidfa`` is the mean leaf angle) and 4SAIL; the same numbers as ``prosail.run_prosail`` row by row.

    Faster than that: PROSPECT runs once for all the rows that share a leaf structure ``n`` (its arrays
    broadcast over rows; only ``n`` must be one number), and a bare row (leaf area 0) is PROSAIL's soil model,
    which is what 4SAIL returns without leaves.
    """
    import prosail  # numba compiles its kernels on import (2 s, 0.6 s from numba's cache): only this world pays

    out = np.empty((len(inputs), 2101))
    soil = prosail.spectral_lib.soil
    bare = np.flatnonzero(inputs[:, P["lai"]] <= 0)
    brightness, dryness = inputs[bare, P["rsoil"], None], inputs[bare, P["psoil"], None]
    out[bare] = brightness * (dryness * soil.rsoil1 + (1.0 - dryness) * soil.rsoil2)
    canopy = np.flatnonzero(inputs[:, P["lai"]] > 0)
    for n in np.unique(inputs[canopy, P["n"]]):
        rows = canopy[inputs[canopy, P["n"]] == n]
        leaf = {name: inputs[rows, P[name], None] for name in ("cab", "car", "cbrown", "cw", "cm", "ant")}
        _, reflectances, transmittances = prosail.run_prospect(float(n), **leaf, prospect_version="D")
        for row, rho, tau in zip(rows, reflectances, transmittances):
            values = inputs[row]
            out[row] = prosail.run_sail(
                rho,
                tau,
                values[P["lai"]],
                values[P["lidfa"]],
                values[P["hspot"]],
                SUN_ZENITH_DEG,
                VIEW_ZENITH_DEG,
                RELATIVE_AZIMUTH_DEG,
                typelidf=2,
                rsoil=values[P["rsoil"]],
                psoil=values[P["psoil"]],
            )
    return out


def _tree_traits(taxonomy: Taxonomy, rng: np.random.Generator) -> tuple[list[dict], tuple, tuple]:
    """Per level, node id -> trait vector, down the tree: level-1 families, arable crop types at level 2,
    then draws around the parent whose spread shrinks with the level (faint groups' draws are set later).
    Also returns each level-1 class's family and each leaf's crop type (its level-2 archetype)."""
    paths, names = taxonomy.paths, taxonomy.names
    traits: list[dict[int, np.ndarray]] = [{} for _ in range(NUM_LEVELS)]
    level1 = [int(i) for i in np.unique(paths[1:, 0])]
    matched = {node: match(names[0][node], LEVEL1_PATTERNS) for node in level1}
    spare = [str(f) for f in rng.permutation(FAMILIES) if f not in matched.values()] or list(FAMILIES)
    unmatched = [node for node in level1 if matched[node] is None]  # take the families no name took, in turn
    family = {node: matched[node] or spare[unmatched.index(node) % len(spare)] for node in level1}
    for node in level1:
        base = "winter_cereal" if family[node] == "arable" else family[node]  # arable: its children decide
        traits[0][node] = perturb(archetype(base), 0, rng)
    rotation = list(CROP_TYPES)  # unmatched arable classes take these in turn, the most grown first
    crop = {}
    for k in range(1, NUM_LEVELS):
        for node in (int(i) for i in np.unique(paths[1:, k])):
            parent = int(paths[np.argmax(paths[:, k] == node), k - 1])
            base = traits[k - 1][parent]
            if k == 1:
                crop[node] = family[parent]
                if family[parent] == "arable":
                    crop[node] = match(names[1][node], ARABLE_PATTERNS) or rotation[0]
                    rotation = rotation[1:] + rotation[:1] if crop[node] == rotation[0] else rotation
                    base = archetype(crop[node])
            traits[k][node] = perturb(base, k, rng)
    crop_type = ("background",) + tuple(crop[int(paths[leaf, 1])] for leaf in range(1, len(paths)))
    family_names = tuple(family.get(i, "background") for i in range(len(names[0])))
    return traits, family_names, crop_type


def _faint_stages(
    paths: np.ndarray, traits: list[dict], rng: np.random.Generator, responses: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, set]:
    """Draw the faint groups, make their members (and everything below) their parent's near twins, and give
    each member its stage offset. Returns (n_leaves + 1, len(PROSAIL_INPUTS)) the leaves' summed offsets
    (at the acquisition; zero elsewhere in the tree) and the faint groups."""
    faint_groups: set = set()
    offset: list[dict[int, np.ndarray]] = [{} for _ in range(NUM_LEVELS)]
    zero = np.zeros(len(PROSAIL_INPUTS))
    t = np.array([ENMAP_MONTH + 0.5])
    for k in range(2, NUM_LEVELS):
        for parent in (int(i) for i in np.unique(paths[1:, k - 1])):
            children = [int(c) for c in np.unique(paths[1:, k][paths[1:, k - 1] == parent])]
            path = paths[np.argmax(paths[:, k - 1] == parent)]
            inherited = any((j, int(path[j - 1])) in faint_groups for j in range(2, k))
            parent_offset = offset[k - 1].get(parent, zero)
            state = prosail_inputs(traits[k - 1][parent], t, parent_offset[None])[0]
            eligible = len(children) > 1 and state[P["lai"]] >= 1.0
            drawn = eligible and not inherited and rng.random() < 0.5
            if drawn:
                faint_groups.add((k, parent))
            if not (drawn or inherited):
                for child in children:
                    offset[k][child] = parent_offset
                continue
            half = (len(children) - 1) / 2
            direction, step = _faint_direction(state, half, responses) if eligible else (0.0 * STAGE_UNITS, 0.0)
            spots = rng.permutation((np.arange(len(children)) - half) * step)
            for child, spot in zip(children, spots):
                traits[k][child] = perturb(traits[k - 1][parent], k, rng, FAINT_SCALE)
                change = zero.copy()
                change[[P[name] for name in STAGE_INPUTS]] = spot * direction * STAGE_UNITS
                offset[k][child] = parent_offset + change
    stage = np.zeros((len(paths), len(PROSAIL_INPUTS)))
    for leaf in range(1, len(paths)):
        stage[leaf] = offset[NUM_LEVELS - 1].get(int(paths[leaf, NUM_LEVELS - 1]), zero)
    return stage, faint_groups


def _faint_direction(
    state: np.ndarray, half: float, responses: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, float]:
    """The change of leaf biochemistry (in :data:`STAGE_UNITS`, largest component 1) that Sentinel-2's bands
    see least relative to EnMAP's at ``state`` (PROSAIL inputs): the generalised eigenvector of the two
    sensors' band-mean squared Jacobians with the smallest eigenvalue; and the step between neighbours along
    it (units) that changes the EnMAP bands by :data:`STAGE_STEP_RMS`, at most :data:`STAGE_MAX_STEP` and
    small enough that the members furthest out (``half`` steps away) stay in PROSPECT's domain."""
    from scipy.linalg import eigh

    columns = [P[name] for name in STAGE_INPUTS]
    rows = np.repeat(state[None], len(columns) + 1, axis=0)
    rows[np.arange(1, len(columns) + 1), columns] += STAGE_UNITS
    spectra = reflectance(rows)
    jacobians = [(r @ (spectra[1:] - spectra[0]).T) for r in responses]  # (bands, inputs) each
    s2, enmap = (j.T @ j / len(j) for j in jacobians)
    _, vectors = eigh(s2, enmap + 1e-9 * np.trace(enmap) * np.eye(len(columns)))
    direction = vectors[:, 0] / np.abs(vectors[:, 0]).max()
    direction = direction * np.sign(direction[np.abs(direction).argmax()])
    rms_per_unit = float(np.sqrt(direction @ enmap @ direction))
    # the members furthest out keep 40 % of each input above its floor (an input near its floor may move by
    # 60 % of a unit, and is held at the floor by prosail_inputs)
    room = np.maximum(state[columns] - LEAF_FLOOR[columns], STAGE_UNITS) * 0.6
    room = room / np.maximum(np.abs(direction) * STAGE_UNITS * half, 1e-12)
    return direction, float(min(STAGE_STEP_RMS / max(rms_per_unit, 1e-12), STAGE_MAX_STEP, room.min()))
