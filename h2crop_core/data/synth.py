"""A synthetic stand-in for the H2Crop benchmark that exercises the science, not just the shapes.

The real benchmark is 180 GB and cannot be downloaded where h2crop is developed and tested. This module
writes datasets with its exact layout, key names, dtypes and shapes, whose content behaves like it:

* parcels are convex polygons (an anisotropic Voronoi tessellation) with one crop each, background
  (hedges, tracks, non-crop land) between and among them, and a few unlabelled (255) parcels;
* crop frequencies are long-tailed (Zipf over the level-4 classes);
* each class has an S2 phenology over 12 months built down the tree: level-1 classes differ from the
  first months on, finer levels only from later months, so early windows separate fewer classes;
* each class has an EnMAP spectrum whose narrow absorption features separate sibling classes at levels
  3-4 that the S2 stream confuses (about half of the fine sibling groups look alike in S2);
* priors come from a crop-rotation process: most parcels follow their class's rotation, some keep last
  year's crop, some change at random;
* sensor noise: pixel noise, per-parcel variability, clouds in some months, noisy water-vapour bands,
  and EnMAP pixels that mix the 3×3 S2 pixels under them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from h2crop_core.data.index import H5_DIR, SPLITS
from h2crop_core.data.schema import H2CROP_SPEC, KEY_STYLES, SampleSpec
from h2crop_core.taxonomy import NUM_LEVELS, TAXONOMY_FILENAME, UNLABELLED, Taxonomy

#: class counts per level of the generated taxonomy (background excluded), as in the benchmark.
DEFAULT_TREE = (6, 36, 82, 101)
LEVEL1_NAMES = ("arable", "grassland", "permanent", "forest", "fallow", "unmaintained", "wetland", "orchard")
#: EnMAP water-vapour absorption bands (indices into 218 bands), where signal drops and noise rises.
WATER_VAPOUR_BANDS = (128, 157)
#: months (0-based) from which a node's S2 signature departs from its parent's, per level.
ONSET_RANGE = ((0, 2), (2, 5), (4, 8), (6, 10))
#: S2 effect amplitude (reflectance) of a node, per level.
S2_AMPLITUDE = (0.09, 0.06, 0.045, 0.04)
REFLECTANCE_SCALE = 10_000.0
S2_OFFSET = 1_000.0  # the L2A-style radiometric offset of the stored integers


# ------------------------------------------------------------------------------------------- taxonomy
def generate_taxonomy(counts: tuple[int, ...] = DEFAULT_TREE, seed: int = 0) -> Taxonomy:
    """A random strict tree with ``counts`` classes per level; level 1 long-tailed like the benchmark's
    (one level-1 class holds most leaves, most level-3 nodes have a single child)."""
    if len(counts) != NUM_LEVELS or any(b < a for a, b in zip(counts, counts[1:])) or counts[0] < 1:
        raise ValueError(f"need 4 non-decreasing positive class counts, got {counts}")
    rng = np.random.default_rng(seed)
    parents = []
    for k in range(1, NUM_LEVELS):
        n_parent, n_child = counts[k - 1], counts[k]
        weights = rng.dirichlet(np.full(n_parent, 0.6))
        if k == 1:
            weights = np.sort(weights)[::-1]  # "arable", the first level-1 class, holds the most leaves
        extra = rng.choice(n_parent, size=n_child - n_parent, p=weights)
        assignment = np.concatenate([np.arange(n_parent), extra])
        parents.append(np.sort(assignment) + 1)  # child i (1-based) -> parent id
    level1 = [LEVEL1_NAMES[i] if i < len(LEVEL1_NAMES) else f"group{i + 1}" for i in range(counts[0])]
    rows = []
    for leaf in range(1, counts[3] + 1):
        path = [leaf]
        for k in range(NUM_LEVELS - 1, 0, -1):
            path.insert(0, int(parents[k - 1][path[0] - 1]))
        row = {"HCAT3_code": f"99{leaf:08d}"}
        for k, class_id in enumerate(path):
            prefix = level1[path[0] - 1]
            row[f"level{k + 1}_id"] = str(class_id)
            row[f"level{k + 1}_name"] = prefix if k == 0 else f"{prefix}_l{k + 1}_{class_id:03d}"
        rows.append((leaf, row))
    return Taxonomy.from_rows(rows, source="generated")


# -------------------------------------------------------------------------------------------- classes
@dataclass
class SyntheticWorld:
    """Everything class-specific: frequencies, S2 phenologies, EnMAP spectra, rotations.

    Index 0 of every per-leaf array is the background class.
    """

    taxonomy: Taxonomy
    spec: SampleSpec
    frequency: np.ndarray  # (n_leaves + 1,) probability of a parcel having each leaf; [0] unused
    s2_signature: np.ndarray  # (n_leaves + 1, 12, s2_bands) reflectance
    enmap_signature: np.ndarray  # (n_leaves + 1, enmap_bands) reflectance (before transmission)
    transmission: np.ndarray  # (enmap_bands,) atmospheric transmission (water-vapour dips)
    predecessor: np.ndarray  # (n_leaves + 1,) the crop the rotation puts before each leaf
    s2_confused: np.ndarray  # (n_leaves + 1,) bool: S2 alone confuses the leaf with a sibling
    faint_groups: frozenset  # {(level index 2|3, parent id)}: sibling groups that look alike in S2

    @classmethod
    def create(cls, taxonomy: Taxonomy, spec: SampleSpec = H2CROP_SPEC, seed: int = 0) -> SyntheticWorld:
        rng = np.random.default_rng(seed + 7919)
        paths = taxonomy.paths  # (n+1, 4)
        n = len(paths) - 1
        months = spec.months

        # Long tail: Zipf over a random ranking of the leaves.
        ranks = rng.permutation(n) + 1
        freq = np.zeros(n + 1)
        freq[1:] = 1.0 / ranks**1.1
        freq /= freq.sum()

        # S2: soil and green vegetation endmembers over 10 bands (B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12).
        soil = np.linspace(0.10, 0.30, spec.s2_bands)
        vegetation = np.interp(np.arange(spec.s2_bands), [0, 1, 2, 3, 4, 6, 9], [0.04, 0.08, 0.04, 0.15, 0.35, 0.45, 0.12])
        t = np.arange(months)
        s2 = np.zeros((n + 1, months, spec.s2_bands))
        # Level-1 phenology: a greenness curve rising at `start`, falling after `end`.
        level1_curve = {}
        for l1 in range(1, taxonomy.num_classes[0]):
            start, length = rng.uniform(0, 6), rng.uniform(3, 9)
            curve = _sigmoid((t - start) * 1.5) * _sigmoid((start + length - t) * 1.5)
            level1_curve[l1] = rng.uniform(0.3, 1.0) * curve + rng.uniform(0.0, 0.2)
        # Fine levels: per-node band effects that appear from the node's onset month on. About half of
        # the sibling groups at levels 3-4 get almost no S2 effect: S2 confuses those siblings.
        node_effect = [{} for _ in range(NUM_LEVELS)]
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
                node_effect[k][node] = S2_AMPLITUDE[k] * ramp[:, None] * rng.choice([-1, 1], spec.s2_bands) * rng.uniform(0.5, 1, spec.s2_bands)
        # A faint group stays faint all the way down: its members' descendants differ in EnMAP only.
        for k in (2, 3):
            for node in np.unique(paths[1:, k]):
                path = paths[np.argmax(paths[:, k] == node)]
                if any((j, int(path[j - 1])) in faint_groups for j in range(2, k + 1)):
                    node_effect[k][node] *= 0.08
        for leaf in range(1, n + 1):
            path = paths[leaf]
            green = level1_curve[path[0]][:, None]
            s2[leaf] = soil + green * (vegetation - soil) + S2_AMPLITUDE[0] * 0.3 * np.sin(path[0] + t)[:, None]
            for k in range(1, NUM_LEVELS):
                s2[leaf] += node_effect[k][path[k]]
        s2[0] = soil * 1.3 + 0.05 * np.cos(t / 2)[:, None]  # background: bright bare/built surfaces
        s2 = np.clip(s2, 0.005, 0.9)
        s2_confused = np.zeros(n + 1, bool)
        for leaf in range(1, n + 1):
            s2_confused[leaf] = any((k, int(paths[leaf, k - 1])) in faint_groups for k in (2, 3))

        # EnMAP: 218 bands 420-2450 nm; broad features for coarse levels, narrow ones for fine levels.
        bands = spec.enmap_bands
        b = np.arange(bands)
        # shapes loosely follow the published band means: red edge near band 54, SWIR falling off
        soil_spec = np.interp(b, [0, bands * 0.3, bands * 0.6, bands], [0.05, 0.16, 0.2, 0.12])
        red_edge = _sigmoid((b - bands * 0.245) / 2.5)
        veg_spec = 0.04 + 0.36 * red_edge - 0.3 * _sigmoid((b - bands * 0.6) / 6)
        enmap = np.zeros((n + 1, bands))
        features = [{} for _ in range(NUM_LEVELS)]
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
        june = min(5, months - 1)
        for leaf in range(1, n + 1):
            green = level1_curve[paths[leaf, 0]][june]
            enmap[leaf] = soil_spec + green * (veg_spec - soil_spec)
            for k in range(NUM_LEVELS):
                enmap[leaf] += features[k][paths[leaf, k]]
        enmap[0] = soil_spec * 1.3
        enmap = np.clip(enmap, 0.005, 0.9)
        transmission = np.ones(bands)
        for centre in WATER_VAPOUR_BANDS:
            if centre < bands:
                transmission *= 1 - 0.9 * np.exp(-0.5 * ((b - centre) / 4) ** 2)

        # Rotations: within each level-1 group, leaves form cycles (wheat -> rapeseed -> barley -> ...).
        predecessor = np.arange(n + 1)
        for l1 in np.unique(paths[1:, 0]):
            members = rng.permutation(np.flatnonzero(paths[:, 0] == l1))
            members = members[members > 0]
            start = 0
            while start < len(members):
                cycle = members[start : start + rng.integers(2, 6)]
                predecessor[cycle] = np.roll(cycle, 1)
                start += len(cycle)
        return cls(taxonomy, spec, freq, s2, enmap, transmission, predecessor, s2_confused, frozenset(faint_groups))

    # --------------------------------------------------------------------------------------- scenes
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

    def label_stack(self, scene: dict, which: str = "label") -> np.ndarray:
        """The (4, H, W) uint8 label (or ``which="prior"``) stack of a scene."""
        parcel = scene["parcel"]
        leaf = scene["parcel_leaf" if which == "label" else "prior_leaf"][parcel]
        stack = np.moveaxis(self.taxonomy.paths[leaf], -1, 0).astype(np.uint8)
        if which == "label":
            stack[:, ~scene["labelled"][parcel]] = UNLABELLED
        return stack

    def render(self, scene: dict, rows: slice, rng: np.random.Generator, months: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """S2 (T, bands, h, W) and EnMAP (bands, h/3, W/3) int16 for the scene rows ``rows`` (multiples of 3)."""
        spec = self.spec
        months = months or spec.months
        parcel = scene["parcel"][rows]
        leaf = scene["parcel_leaf"][parcel]
        h, w = parcel.shape
        num_parcels = len(scene["parcel_leaf"])
        # Per-parcel variability, drawn from a generator seeded by the parcel so strips agree.
        parcel_rng = np.random.default_rng(scene.get("seed", 0))
        s2_parcel = parcel_rng.normal(0, 0.012, (num_parcels, spec.s2_bands))
        brightness = parcel_rng.normal(1.0, 0.04, num_parcels)

        s2 = self.s2_signature[leaf][..., :months, :]  # (h, W, T, bands)
        s2 = np.moveaxis(s2, (2, 3), (0, 1)) * brightness[parcel] + np.moveaxis(s2_parcel[parcel], -1, 0)[None]
        s2 = s2 + rng.normal(0, 0.008, s2.shape)
        clouds = scene.get("clouds")
        if clouds is not None:
            s2 = s2 + 0.3 * clouds[:months, None, rows, :]
        s2_int = np.clip(S2_OFFSET + REFLECTANCE_SCALE * s2, -32768, 32767).astype(np.int16)

        f = spec.enmap_factor
        spectra = self.enmap_signature[leaf] * brightness[parcel][..., None]  # (h, W, bands)
        spectra = spectra.reshape(h // f, f, w // f, f, -1).mean(axis=(1, 3))  # mixed 30 m pixels
        spectra = spectra * self.transmission
        noise_scale = 0.004 / np.maximum(self.transmission, 0.15)  # water-vapour bands are noisy
        spectra = spectra + rng.normal(0, 1, spectra.shape) * noise_scale
        enmap_int = np.clip(REFLECTANCE_SCALE * np.moveaxis(spectra, -1, 0), -32768, 32767).astype(np.int16)
        return s2_int, enmap_int


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


def voronoi_parcels(height: int, width: int, rng: np.random.Generator, spacing: float = 22.0, border: float = 1.2) -> tuple[np.ndarray, int]:
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------------- datasets
@dataclass
class SynthResult:
    root: Path
    taxonomy: Taxonomy
    splits: dict[str, list[str]]
    region: dict | None = None


def synthesize_dataset(
    out: str | Path,
    samples: int = 32,
    *,
    seed: int = 0,
    taxonomy: Taxonomy | None = None,
    key_style: str = "files",
    spec: SampleSpec = H2CROP_SPEC,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    region_size: int | None = 1008,
    progress: bool = True,
) -> SynthResult:
    """Write a synthetic dataset root: ``h5_data/``, ``data_lists/``, ``cascade_labels.csv`` and, unless
    ``region_size`` is None, a georeferenced ``region/`` for the mapping stage.

    Args:
        out: the dataset root to create (existing sample files are overwritten).
        samples: number of samples.
        seed: everything is a deterministic function of the seed.
        taxonomy: classes to generate; a generated 6/36/82/101 tree by default.
        key_style: ``files`` (``S2_data``, ``EnMAP_data``, ``priors``) or ``readme`` (``S2``, ``EnMAP``, ``prior``).
        region_size: side of the region in S2 pixels (a multiple of 3), or None for no region.
    """
    from tqdm.auto import tqdm

    if key_style not in KEY_STYLES:
        raise ValueError(f"key_style must be one of {sorted(KEY_STYLES)}, got {key_style!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    root = Path(out)
    names = sample_names(samples, seed)
    h5_dir = root / H5_DIR
    foreign = sorted(p.name for p in h5_dir.glob("*.h5") if p.stem not in set(names)) if h5_dir.is_dir() else []
    if foreign:
        raise ValueError(
            f"{h5_dir} already holds {len(foreign)} sample file(s) this synthesis would not overwrite "
            f"(e.g. {foreign[0]}): they would mix into the new dataset. Use an empty or new folder."
        )
    h5_dir.mkdir(parents=True, exist_ok=True)
    taxonomy = taxonomy or generate_taxonomy(seed=seed)
    taxonomy.to_csv(root / TAXONOMY_FILENAME)
    world = SyntheticWorld.create(taxonomy, spec, seed)
    keys = KEY_STYLES[key_style]
    for i, name in enumerate(tqdm(names, desc="synth", unit="sample", disable=not progress, dynamic_ncols=True)):
        sample_rng = np.random.default_rng([seed, i])
        scene = world.scene(spec.size, spec.size, sample_rng)
        scene["seed"] = int(sample_rng.integers(2**31))
        add_clouds(scene, sample_rng, spec.months)
        s2, enmap = world.render(scene, slice(None), sample_rng)
        arrays = {"s2": s2, "enmap": enmap, "label": world.label_stack(scene), "prior": world.label_stack(scene, "prior")}
        with h5py.File(h5_dir / f"{name}.h5", "w") as handle:
            for modality, array in arrays.items():
                handle.create_dataset(keys[modality], data=array)
    splits = write_splits(root, names, split_fractions, seed)
    region = None
    if region_size:
        from h2crop_core.data.region import synthesize_region

        region = synthesize_region(root / "region", world, size=region_size, seed=seed, progress=progress)
    return SynthResult(root, taxonomy, splits, region)


def sample_names(samples: int, seed: int) -> list[str]:
    """Benchmark-style names: EnMAP acquisition time, running number, pixel offsets, MGRS tile."""
    rng = np.random.default_rng(seed)
    tiles = ("T31UGQ", "T31TCJ", "T30UXU", "T31UDP")
    names = []
    for i in range(samples):
        month, day, hour, minute, second = rng.integers(5, 9), rng.integers(1, 28), rng.integers(0, 6), rng.integers(0, 60), rng.integers(0, 60)
        x, y = (rng.integers(0, 30, size=2) * 64).tolist()
        names.append(f"2022{month:02d}{day:02d}T1{hour}{minute:02d}{second:02d}Z_{i:03d}_x{x}_y{y}_{tiles[i % len(tiles)]}")
    return names


def write_splits(root: Path, names: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Shuffle ``names`` into train/val/test lists (every split non-empty when there are ≥ 3 samples)."""
    order = np.random.default_rng(seed + 1).permutation(len(names))
    n = len(names)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    folder = root / "data_lists"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in SPLITS:
        lo, hi = bounds[split]
        splits[split] = [names[j] for j in order[lo:hi]]
        (folder / f"{split}.txt").write_text("".join(f"{name}\n" for name in splits[split]))
    return splits
