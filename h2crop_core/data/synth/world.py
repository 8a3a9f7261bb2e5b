"""The synthetic world: each class's frequency, S2 phenology, EnMAP spectrum and crop rotation, and the
scenes (parcels, labels, priors, rasters) drawn from it.

Two kinds of world: ``drawn`` (the default) draws each class's signatures by hand, a smooth curve per level-1
class plus effects of the finer levels; ``prosail`` computes them with a canopy radiative-transfer model from
a phenology of leaf and canopy traits per class (:mod:`~h2crop_core.data.synth.canopy`), with several spectra
per class that each parcel mixes in its own proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.data.synth.canopy import Canopy, canopy_world, require_prosail
from h2crop_core.data.synth.layout import gap_field, voronoi_parcels
from h2crop_core.errors import SettingError
from h2crop_core.taxonomy import NUM_LEVELS, UNLABELLED, Taxonomy

#: EnMAP water-vapour absorption bands (indices into 218 bands), where signal drops and noise rises.
WATER_VAPOUR_BANDS = (128, 157)
#: months (0-based) from which a node's S2 signature departs from its parent's, per level.
ONSET_RANGE = ((0, 2), (2, 5), (4, 8), (6, 10))
#: S2 effect amplitude (reflectance) of a node, per level.
S2_AMPLITUDE = (0.09, 0.06, 0.045, 0.04)
REFLECTANCE_SCALE = 10_000.0
S2_OFFSET = 1_000.0  # the L2A-style radiometric offset of the stored integers
#: the kinds of world :meth:`SyntheticWorld.create` makes
WORLD_KINDS = ("drawn", "prosail")
#: Dirichlet concentration of a parcel's mix of its class's spectra: below 1, a parcel leans to one or two
DIRICHLET_ALPHA = 0.5


@dataclass
class SyntheticWorld:
    """Everything class-specific: frequencies, S2 phenologies, EnMAP spectra, rotations.

    Index 0 of every per-leaf array is the background class. A class has one or more *variants* (spectra of
    its fields as they vary); a parcel mixes its class's variants (:meth:`render`). A drawn world has one.
    """

    taxonomy: Taxonomy
    spec: SampleSpec
    frequency: np.ndarray  # (n_leaves + 1,) probability of a parcel having each leaf; [0] unused
    s2_variants: np.ndarray  # (n_leaves + 1, variants, 12, s2_bands) reflectance
    enmap_variants: np.ndarray  # (n_leaves + 1, variants, enmap_bands) reflectance (before transmission)
    transmission: np.ndarray  # (enmap_bands,) atmospheric transmission (water-vapour dips)
    predecessor: np.ndarray  # (n_leaves + 1,) the crop the rotation puts before each leaf
    s2_confused: np.ndarray  # (n_leaves + 1,) bool: S2 alone confuses the leaf with a sibling
    faint_groups: frozenset  # {(level index 2|3, parent id)}: sibling groups that look alike in S2
    kind: str = "drawn"  # one of WORLD_KINDS
    canopy: Canopy | None = None  # a prosail world's Canopy (its PROSAIL inputs, families, crop types); else None
    gaps: float = 0.0  # a prosail world's mean share of bare soil within fields (layout.gap_field); 0: none

    @property
    def s2_signature(self) -> np.ndarray:
        """(n_leaves + 1, 12, s2_bands) each class's mean S2 reflectance over its variants."""
        return self.s2_variants.mean(axis=1)

    @property
    def enmap_signature(self) -> np.ndarray:
        """(n_leaves + 1, enmap_bands) each class's mean EnMAP reflectance over its variants."""
        return self.enmap_variants.mean(axis=1)

    @classmethod
    def create(
        cls, taxonomy: Taxonomy, spec: SampleSpec = H2CROP_SPEC, seed: int = 0, kind: str = "drawn"
    ) -> SyntheticWorld:
        """The world of ``taxonomy``: a deterministic function of ``seed`` and ``kind``.

        The draws happen in a fixed order (frequencies, level-1 curves, S2 node effects, EnMAP features,
        rotations) from one generator, so a dataset generated with a seed stays the same. ``kind="prosail"``
        takes the frequencies and rotations the same way and the signatures from
        :func:`~h2crop_core.data.synth.canopy.canopy_world`.
        """
        check_world_kind(kind)
        rng = np.random.default_rng(seed + 7919)
        paths = taxonomy.paths  # (n+1, 4)
        # Long tail: Zipf over a random ranking of the leaves.
        ranks = rng.permutation(len(paths) - 1) + 1
        frequency = np.zeros(len(paths))
        frequency[1:] = 1.0 / ranks**1.1
        frequency /= frequency.sum()
        if kind == "prosail":
            return cls._prosail(taxonomy, spec, seed, frequency, rng)
        level1_curve = _level1_curves(taxonomy.num_classes[0], spec.months, rng)
        node_effect, faint_groups = _s2_node_effects(paths, spec, rng)
        s2 = _s2_signatures(paths, spec, level1_curve, node_effect)
        s2_confused = _s2_confused(paths, faint_groups)
        enmap = _enmap_signatures(paths, spec, level1_curve, rng)
        predecessor = _rotations(paths, rng)
        return cls(
            taxonomy,
            spec,
            frequency,
            s2[:, None],
            enmap[:, None],
            _transmission(spec.enmap_bands),
            predecessor,
            s2_confused,
            frozenset(faint_groups),
        )

    @classmethod
    def _prosail(
        cls, taxonomy: Taxonomy, spec: SampleSpec, seed: int, frequency: np.ndarray, rng: np.random.Generator
    ) -> SyntheticWorld:
        """:meth:`create`'s PROSAIL world, after the frequencies."""
        paths = taxonomy.paths
        canopy = canopy_world(taxonomy, spec, seed)
        return cls(
            taxonomy,
            spec,
            frequency,
            canopy.s2,
            canopy.enmap,
            _transmission(spec.enmap_bands),
            _rotations(paths, rng),
            _s2_confused(paths, canopy.faint_groups),
            canopy.faint_groups,
            kind="prosail",
            canopy=canopy,
        )

    def scene(self, height: int, width: int, rng: np.random.Generator, parcel_spacing: float = 22.0) -> dict:
        """Parcels, their crops and last year's crops over a (height, width) S2 grid.

        Returns:
            ``parcel`` (H, W) int32 parcel index (0 = the background between parcels), ``leaf`` (H, W)
            level-4 id (0 background), ``labelled`` (num_parcels,) bool, ``prior_leaf`` (num_parcels,) and
            ``parcel_leaf`` (num_parcels,).
        """
        parcel, count = voronoi_parcels(height, width, rng, parcel_spacing)
        n = len(self.frequency) - 1
        parcel_leaf = np.zeros(count + 1, dtype=np.int64)
        crop = rng.random(count) >= 0.12  # ~12% of parcels are non-crop land (background)
        parcel_leaf[1:][crop] = rng.choice(np.arange(1, n + 1), size=int(crop.sum()), p=self.frequency[1:])
        labelled = np.ones(count + 1, dtype=bool)
        labelled[1:] = rng.random(count) >= 0.03  # a few parcels lack a declaration: unlabelled (255)
        draw = rng.random(count + 1)
        prior_leaf = np.where(draw < 0.6, self.predecessor[parcel_leaf], parcel_leaf)  # rotation / same crop
        changed = draw >= 0.85  # the rest: an unexpected change
        prior_leaf[changed] = rng.choice(np.arange(1, n + 1), size=int(changed.sum()), p=self.frequency[1:])
        prior_leaf[parcel_leaf == 0] = 0
        prior_leaf[0] = 0
        return {"parcel": parcel, "parcel_leaf": parcel_leaf, "labelled": labelled, "prior_leaf": prior_leaf}

    def sparsify_labels(self, scene: dict, fraction: float, rng: np.random.Generator) -> None:
        """Keep labels on only some parcels, as a user with a field survey has them: each tile draws its own
        labelling rate (Beta-distributed with mean ``fraction``, so some tiles are well labelled and many
        barely), each parcel is kept with that rate, and the margins between parcels lose their labels."""
        rate = rng.beta(0.6, 0.6 * (1 - fraction) / fraction) if fraction < 1 else 1.0
        labelled = scene["labelled"].copy()
        labelled[1:] &= rng.random(len(labelled) - 1) < rate
        labelled[0] = False
        scene["labelled"] = labelled

    def label_stack(self, scene: dict, which: str = "label") -> np.ndarray:
        """The (4, H, W) uint8 label (or ``which="prior"``) stack of a scene."""
        parcel = scene["parcel"]
        leaf = scene["parcel_leaf" if which == "label" else "prior_leaf"][parcel]
        stack = np.moveaxis(self.taxonomy.paths[leaf], -1, 0).astype(np.uint8)
        if which == "label":
            stack[:, ~scene["labelled"][parcel]] = UNLABELLED
        return stack

    def render(
        self, scene: dict, rows: slice, rng: np.random.Generator, months: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """S2 (T, bands, h, W) and EnMAP (bands, h/3, W/3) int16 for the scene rows ``rows`` (multiples of 3)."""
        spec = self.spec
        months = months or spec.months
        parcel = scene["parcel"][rows]
        h, w = parcel.shape
        num_parcels = len(scene["parcel_leaf"])
        # Per-parcel variability, drawn from a generator seeded by the parcel so strips agree.
        parcel_rng = np.random.default_rng(scene.get("seed", 0))
        s2_parcel = parcel_rng.normal(0, 0.012, (num_parcels, spec.s2_bands))
        brightness = parcel_rng.normal(1.0, 0.04, num_parcels)
        s2_spectra, enmap_spectra = self._parcel_spectra(scene["parcel_leaf"], parcel_rng)

        s2_spectra, enmap_spectra = s2_spectra[parcel][..., :months, :], enmap_spectra[parcel]  # (h, W, [T,] bands)
        if self.gaps > 0 and self.canopy is not None:
            s2_spectra, enmap_spectra = self._with_soil(scene, rows, s2_spectra, enmap_spectra)
        s2 = np.moveaxis(s2_spectra, (2, 3), (0, 1)) * brightness[parcel] + np.moveaxis(s2_parcel[parcel], -1, 0)[None]
        s2 = s2 + rng.normal(0, 0.008, s2.shape)
        clouds = scene.get("clouds")
        if clouds is not None:
            s2 = s2 + 0.3 * clouds[:months, None, rows, :]
        s2_int = np.clip(S2_OFFSET + REFLECTANCE_SCALE * s2, -32768, 32767).astype(np.int16)

        f = spec.enmap_factor
        spectra = enmap_spectra * brightness[parcel][..., None]  # (h, W, bands)
        spectra = spectra.reshape(h // f, f, w // f, f, -1).mean(axis=(1, 3))  # mixed 30 m pixels
        spectra = spectra * self.transmission
        noise_scale = 0.004 / np.maximum(self.transmission, 0.15)  # water-vapour bands are noisy
        spectra = spectra + rng.normal(0, 1, spectra.shape) * noise_scale
        enmap_int = np.clip(REFLECTANCE_SCALE * np.moveaxis(spectra, -1, 0), -32768, 32767).astype(np.int16)
        return s2_int, enmap_int

    def _with_soil(self, scene: dict, rows: slice, s2: np.ndarray, enmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pixels' S2 (h, W, T, bands) and EnMAP (h, W, bands) spectra with their share of bare soil
        (the scene's gap field, drawn once for the whole scene so that its strips agree) mixed in."""
        key = f"gaps={self.gaps:g}"  # by share: a scene rendered again with another one draws its own
        if key not in scene:
            scene[key] = gap_field(scene["parcel"], scene.get("seed", 0), self.gaps)
        gaps, parcel = scene[key][rows], scene["parcel"][rows]
        leaf = scene["parcel_leaf"][parcel]
        soil_s2 = self.canopy.soil_s2.mean(axis=1)[leaf][..., : s2.shape[2], :]
        soil_enmap = self.canopy.soil_enmap.mean(axis=1)[leaf]
        return s2 + gaps[..., None, None] * (soil_s2 - s2), enmap + gaps[..., None] * (soil_enmap - enmap)

    def _parcel_spectra(self, parcel_leaf: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Each parcel's S2 (parcels, 12, bands) and EnMAP (parcels, bands) reflectance: its class's variants
        mixed with Dirichlet weights of its own, the same all year (a field keeps its character). With one
        variant (a drawn world) the class's spectra, and nothing is drawn."""
        count = self.s2_variants.shape[1]
        if count == 1:
            return self.s2_variants[parcel_leaf, 0], self.enmap_variants[parcel_leaf, 0]
        weights = rng.dirichlet(np.full(count, DIRICHLET_ALPHA), len(parcel_leaf))
        s2 = np.einsum("pk,pktb->ptb", weights, self.s2_variants[parcel_leaf])
        return s2, np.einsum("pk,pkb->pb", weights, self.enmap_variants[parcel_leaf])


def check_world_kind(kind: str) -> None:
    """Refuse, in one line, a world :meth:`SyntheticWorld.create` cannot make: an unknown kind, or ``prosail``
    without its package (callers check before they write anything)."""
    if kind not in WORLD_KINDS:
        raise SettingError(f"world must be one of {', '.join(WORLD_KINDS)}; got {kind!r}")
    if kind == "prosail":
        require_prosail()


# ------------------------------------------------------------------------------------------ signatures
def _level1_curves(num_level1: int, months: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Level-1 phenology: per level-1 class (ids 1..num_level1-1), a greenness curve over the months that
    rises at a random start and falls after a random length."""
    t = np.arange(months)
    curves = {}
    for l1 in range(1, num_level1):
        start, length = rng.uniform(0, 6), rng.uniform(3, 9)
        curve = _sigmoid((t - start) * 1.5) * _sigmoid((start + length - t) * 1.5)
        curves[l1] = rng.uniform(0.3, 1.0) * curve + rng.uniform(0.0, 0.2)
    return curves


def _s2_node_effects(paths: np.ndarray, spec: SampleSpec, rng: np.random.Generator) -> tuple[list[dict], set]:
    """Per node of levels 2-4, a (months, s2_bands) S2 effect that appears from the node's onset month on,
    and the sibling groups at levels 3-4 (about half) that get almost no S2 effect: S2 confuses them."""
    t = np.arange(spec.months)
    node_effect: list[dict] = [{} for _ in range(NUM_LEVELS)]
    faint_groups = set()  # (level index k, parent id at k-1) whose children look alike in S2
    for k in range(1, NUM_LEVELS):
        low, high = ONSET_RANGE[k]
        for node in np.unique(paths[1:, k]):
            parent = int(paths[np.argmax(paths[:, k] == node), k - 1])
            siblings = np.unique(paths[1:, k][paths[1:, k - 1] == parent])
            if k >= 2 and len(siblings) > 1 and node == siblings[0] and rng.random() < 0.5:
                faint_groups.add((k, parent))
            onset = rng.uniform(low, high)
            ramp = np.clip((t - onset + 1) / 2, 0, 1)
            node_effect[k][node] = (
                S2_AMPLITUDE[k]
                * ramp[:, None]
                * rng.choice([-1, 1], spec.s2_bands)
                * rng.uniform(0.5, 1, spec.s2_bands)
            )
    # A faint group stays faint all the way down: its members' descendants differ in EnMAP only.
    for k in (2, 3):
        for node in np.unique(paths[1:, k]):
            path = paths[np.argmax(paths[:, k] == node)]
            if any((j, int(path[j - 1])) in faint_groups for j in range(2, k + 1)):
                node_effect[k][node] *= 0.08
    return node_effect, faint_groups


def _s2_signatures(paths: np.ndarray, spec: SampleSpec, level1_curve: dict, node_effect: list[dict]) -> np.ndarray:
    """(n_leaves + 1, months, s2_bands) reflectance: soil and vegetation endmembers mixed by the level-1
    greenness, plus every node effect down the leaf's path; index 0 is bright bare/built background."""
    t = np.arange(spec.months)
    # endmembers over 10 bands (B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12)
    soil = np.linspace(0.10, 0.30, spec.s2_bands)
    vegetation = np.interp(np.arange(spec.s2_bands), [0, 1, 2, 3, 4, 6, 9], [0.04, 0.08, 0.04, 0.15, 0.35, 0.45, 0.12])
    s2 = np.zeros((len(paths), spec.months, spec.s2_bands))
    for leaf in range(1, len(paths)):
        path = paths[leaf]
        green = level1_curve[path[0]][:, None]
        s2[leaf] = soil + green * (vegetation - soil) + S2_AMPLITUDE[0] * 0.3 * np.sin(path[0] + t)[:, None]
        for k in range(1, NUM_LEVELS):
            s2[leaf] += node_effect[k][path[k]]
    s2[0] = soil * 1.3 + 0.05 * np.cos(t / 2)[:, None]
    return np.clip(s2, 0.005, 0.9)


def _enmap_signatures(paths: np.ndarray, spec: SampleSpec, level1_curve: dict, rng: np.random.Generator) -> np.ndarray:
    """(n_leaves + 1, enmap_bands) reflectance over 420-2450 nm: broad absorption features per node for
    coarse levels, narrow ones for fine levels, on a soil/vegetation mix by June greenness."""
    bands = spec.enmap_bands
    b = np.arange(bands)
    # shapes loosely follow the published band means: red edge near band 54, SWIR falling off
    soil_spec = np.interp(b, [0, bands * 0.3, bands * 0.6, bands], [0.05, 0.16, 0.2, 0.12])
    red_edge = _sigmoid((b - bands * 0.245) / 2.5)
    veg_spec = 0.04 + 0.36 * red_edge - 0.3 * _sigmoid((b - bands * 0.6) / 6)
    features: list[dict] = [{} for _ in range(NUM_LEVELS)]
    for k in range(NUM_LEVELS):
        for node in np.unique(paths[1:, k]):
            width = (12.0, 8.0, 2.0, 1.5)[k]
            amplitude = (0.05, 0.035, 0.03, 0.03)[k]
            spectrum = np.zeros(bands)
            for _ in range(3 if k >= 2 else 2):
                centre = rng.uniform(4, bands - 4)
                spectrum += rng.choice([-1, 1]) * amplitude * np.exp(-0.5 * ((b - centre) / width) ** 2)
            features[k][node] = spectrum
    # EnMAP sees the scene once, in early summer: greenness of the S2 phenology in June.
    june = min(5, spec.months - 1)
    enmap = np.zeros((len(paths), bands))
    for leaf in range(1, len(paths)):
        green = level1_curve[paths[leaf, 0]][june]
        enmap[leaf] = soil_spec + green * (veg_spec - soil_spec)
        for k in range(NUM_LEVELS):
            enmap[leaf] += features[k][paths[leaf, k]]
    enmap[0] = soil_spec * 1.3
    return np.clip(enmap, 0.005, 0.9)


def _s2_confused(paths: np.ndarray, faint_groups: set | frozenset) -> np.ndarray:
    """(n_leaves + 1,) bool: the leaves under a faint sibling group (at level 3 or 4)."""
    confused = np.zeros(len(paths), bool)
    for leaf in range(1, len(paths)):
        confused[leaf] = any((k, int(paths[leaf, k - 1])) in faint_groups for k in (2, 3))
    return confused


def _transmission(bands: int) -> np.ndarray:
    """(bands,) atmospheric transmission: dips at the water-vapour absorption bands."""
    b = np.arange(bands)
    transmission = np.ones(bands)
    for centre in WATER_VAPOUR_BANDS:
        if centre < bands:
            transmission *= 1 - 0.9 * np.exp(-0.5 * ((b - centre) / 4) ** 2)
    return transmission


def _rotations(paths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_leaves + 1,) the crop before each leaf: within each level-1 group, leaves form cycles of 2-5
    (wheat -> rapeseed -> barley -> ...)."""
    predecessor = np.arange(len(paths))
    for l1 in np.unique(paths[1:, 0]):
        members = rng.permutation(np.flatnonzero(paths[:, 0] == l1))
        members = members[members > 0]
        start = 0
        while start < len(members):
            cycle = members[start : start + rng.integers(2, 6)]
            predecessor[cycle] = np.roll(cycle, 1)
            start += len(cycle)
    return predecessor


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
