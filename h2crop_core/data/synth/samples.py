"""Synthetic sample datasets: a generated taxonomy, the ``.h5`` samples, their names and split lists."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from h2crop_core.data.index import H5_DIR, LIST_DIRS, SPLITS, DatasetError
from h2crop_core.data.schema import H2CROP_SPEC, KEY_STYLES, SampleSpec
from h2crop_core.data.synth.layout import MAX_GAP, add_clouds
from h2crop_core.data.synth.quicklook import world_quicklook
from h2crop_core.data.synth.region import synthesize_region
from h2crop_core.data.synth.tree import generate_taxonomy
from h2crop_core.data.synth.world import SyntheticWorld, check_world_kind
from h2crop_core.errors import SettingError
from h2crop_core.files import write_if_changed, write_text_atomic
from h2crop_core.products.contract import CONTRACT_FILE, contract_for
from h2crop_core.taxonomy import TAXONOMY_FILENAME, Taxonomy


# ------------------------------------------------------------------------------------------- datasets
@dataclass
class SynthResult:
    """What :func:`synthesize_dataset` wrote: the root, its taxonomy, the split members, the region's
    manifest (None without a region) and the world the samples were drawn from."""

    root: Path
    taxonomy: Taxonomy
    splits: dict[str, list[str]]
    region: dict | None = None
    world: SyntheticWorld | None = None


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
    label_fraction: float = 1.0,
    progress: bool = True,
    world: str = "drawn",
    world_seed: int | None = None,
    gaps: float = 0.0,
) -> SynthResult:
    """Write a synthetic dataset root: ``h5_data/``, ``data_lists/``, ``cascade_labels.csv``,
    ``input_contract.json`` (what the bands are: the benchmark's, as generated) and, unless ``region_size``
    is None, a georeferenced ``region/`` for the mapping stage.

    Args:
        out: the dataset root to create (existing sample files are overwritten).
        samples: number of samples.
        seed: everything is a deterministic function of the seed.
        world_seed: the world (taxonomy and class signatures) of another seed than the samples' (their
            tiles, parcels, labels and noise): several sample sets drawn from one world.
        taxonomy: classes to generate; a generated 6/36/82/101 tree by default.
        key_style: ``files`` (``S2_data``, ``EnMAP_data``, ``priors``) or ``readme`` (``S2``, ``EnMAP``, ``prior``).
        region_size: side of the region in S2 pixels (a multiple of 3), or None for no region.
        label_fraction: below 1, sparse labels as from a field survey: about this fraction of the parcels
            keeps its label, unevenly over the tiles (:meth:`SyntheticWorld.sparsify_labels`); the images
            are the same as with dense labels.
        world: ``drawn`` signatures, or ``prosail`` ones from a canopy radiative-transfer model, which also
            writes ``world.png`` (:func:`~h2crop_core.data.synth.quicklook.world_quicklook`).
        gaps: a prosail world's mean share of bare soil within fields, in [0, 0.9)
            (:func:`~h2crop_core.data.synth.layout.gap_field`); 0, the default: closed canopies.
    """
    from tqdm.auto import tqdm

    if key_style not in KEY_STYLES:
        raise SettingError(f"key_style must be one of {sorted(KEY_STYLES)}, got {key_style!r}")
    if samples < 1:
        raise SettingError(f"samples must be at least 1, got {samples}")
    check_world_kind(world)
    if not 0 <= gaps < MAX_GAP or (gaps and world != "prosail"):
        raise SettingError(f"gaps is a prosail world's mean share of bare soil in [0, {MAX_GAP}); got {gaps} ({world})")
    if not 0 < label_fraction <= 1:
        raise SettingError(f"label_fraction is a fraction in (0, 1]; got {label_fraction}")
    root = Path(out)
    names = sample_names(samples, seed)
    h5_dir = root / H5_DIR
    foreign = sorted(p.name for p in h5_dir.glob("*.h5") if p.stem not in set(names)) if h5_dir.is_dir() else []
    if foreign:
        raise DatasetError(
            f"{h5_dir} already holds {len(foreign)} sample file(s) this synthesis would not overwrite "
            f"(e.g. {foreign[0]}): they would mix into the new dataset. Use an empty or new folder."
        )
    h5_dir.mkdir(parents=True, exist_ok=True)
    world_seed = seed if world_seed is None else world_seed
    taxonomy = taxonomy or generate_taxonomy(seed=world_seed)
    taxonomy.to_csv(root / TAXONOMY_FILENAME)
    # the generated bands are the benchmark's (S2 in the model's order, l2a-offset-1000; EnMAP at the nominal
    # centres); unchanged bytes keep the file's time, like the samples'
    write_if_changed(root / CONTRACT_FILE, json.dumps(contract_for(spec).to_dict(), indent=1).encode())
    generated = SyntheticWorld.create(taxonomy, spec, world_seed, world)
    generated.gaps = gaps
    if world == "prosail":  # what the classes look like; a drawn world's figure would add to the default's time
        world_quicklook(generated, root / "world.png")
    keys = KEY_STYLES[key_style]
    for i, name in enumerate(tqdm(names, desc="synth", unit="sample", disable=not progress, dynamic_ncols=True)):
        arrays = draw_sample(generated, spec, [seed, i], label_fraction)
        write_if_changed(h5_dir / f"{name}.h5", h5_bytes({keys[m]: array for m, array in arrays.items()}))
    splits = write_splits(root, names, split_fractions, seed)
    region = None
    if region_size:
        region = synthesize_region(root / "region", generated, size=region_size, seed=seed, progress=progress)
    return SynthResult(root, taxonomy, splits, region, generated)


def draw_sample(world: SyntheticWorld, spec: SampleSpec, seed: list[int], label_fraction: float) -> dict:
    """One sample's ``s2``, ``enmap``, ``label`` and ``prior`` arrays, a deterministic function of ``seed``."""
    sample_rng = np.random.default_rng(seed)
    scene = world.scene(spec.size, spec.size, sample_rng)
    scene["seed"] = int(sample_rng.integers(2**31))
    add_clouds(scene, sample_rng, spec.months)
    s2, enmap = world.render(scene, slice(None), sample_rng)
    if label_fraction < 1:  # its own generator: the images stay those of the dense dataset
        world.sparsify_labels(scene, label_fraction, np.random.default_rng([*seed, 1]))
    return {"s2": s2, "enmap": enmap, "label": world.label_stack(scene), "prior": world.label_stack(scene, "prior")}


def h5_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An HDF5 file of ``arrays`` as bytes, the same bytes for the same arrays (no timestamps)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for key, array in arrays.items():
            handle.create_dataset(key, data=array, track_times=False)
    return buffer.getvalue()


def sample_names(samples: int, seed: int) -> list[str]:
    """Benchmark-style names: EnMAP acquisition time, running number, pixel offsets, MGRS tile."""
    rng = np.random.default_rng(seed)
    tiles = ("T31UGQ", "T31TCJ", "T30UXU", "T31UDP")
    names = []
    for i in range(samples):
        month, day, hour, minute, second = (
            rng.integers(5, 9),
            rng.integers(1, 28),
            rng.integers(0, 6),
            rng.integers(0, 60),
            rng.integers(0, 60),
        )
        x, y = (rng.integers(0, 30, size=2) * 64).tolist()
        names.append(
            f"2022{month:02d}{day:02d}T1{hour}{minute:02d}{second:02d}Z_{i:03d}_x{x}_y{y}_{tiles[i % len(tiles)]}"
        )
    return names


def write_splits(
    root: Path, names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[str]]:
    """Shuffle ``names`` into train/val/test lists (every split non-empty when there are ≥ 3 samples)."""
    order = np.random.default_rng(seed + 1).permutation(len(names))
    n = len(names)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    folder = root / LIST_DIRS[0]
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in SPLITS:
        lo, hi = bounds[split]
        splits[split] = [names[j] for j in order[lo:hi]]
        write_text_atomic(folder / f"{split}.txt", "".join(f"{name}\n" for name in splits[split]))
    return splits
