"""A generated region's parcels as registers ship them, for ``h2crop prepare``: this year's and last year's
declarations with national crop codes, and the crosswalk from those codes to HCAT3.

* ``parcels.gpkg``: every parcel with its true ``level4_id`` and ``crop`` name (what ``h2crop parcels`` is
  checked against), its national code ``CODE_CULTU`` and its HCAT3 code ``EC_hcat_c`` (EuroCrops' column).
  Parcels of non-crop land are in it with ``level4_id`` 0 and no codes; parcels without a declaration
  (unlabelled in ``label.tif``) carry the code ``ZZZ``, which the crosswalk lacks.
* ``parcels_prior.gpkg``: last year's declarations (``prior.tif``'s crops) on the same parcels.
* ``crosswalk.csv``: EuroCrops' country-table layout (``original_code``, ``original_name``, ``HCAT3_code``);
  like a real one it maps several national codes to one HCAT3 class (every other class has two codes).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from affine import Affine

from h2crop_core.data.synth.user_files import PARCELS_FILE, write_parcels
from h2crop_core.files import write_text_atomic
from h2crop_core.taxonomy import Taxonomy

PRIOR_PARCELS_FILE = "parcels_prior.gpkg"
CROSSWALK_FILE = "crosswalk.csv"
CODE_COLUMN = "CODE_CULTU"
HCAT3_COLUMN = "EC_hcat_c"
#: the national code of a parcel with no declaration (not in the crosswalk)
UNDECLARED = "ZZZ"


def national_codes(leaf: int) -> list[str]:
    """The national codes of a level-4 class: one, or two for every other class (several codes, one class)."""
    return [f"N{leaf:03d}"] + ([f"N{leaf:03d}B"] if leaf % 2 == 0 else [])


def write_crosswalk(path: Path, taxonomy: Taxonomy) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["original_code", "original_name", "HCAT3_code"])
    names = taxonomy.class_names(4)
    for leaf in range(1, len(names)):
        for code in national_codes(leaf):
            writer.writerow([code, f"{names[leaf]} (national {code})", taxonomy.codes[leaf]])
    return write_text_atomic(path, buffer.getvalue())


def _codes(parcel_leaf: np.ndarray, declared: np.ndarray, taxonomy: Taxonomy, rng: np.random.Generator) -> dict:
    national = [
        (rng.choice(national_codes(int(leaf))) if ok else UNDECLARED) if leaf else ""
        for leaf, ok in zip(parcel_leaf, declared)
    ]
    hcat3 = [taxonomy.codes[int(leaf)] if leaf and ok else "" for leaf, ok in zip(parcel_leaf, declared)]
    return {CODE_COLUMN: np.array(national, dtype=object), HCAT3_COLUMN: np.array(hcat3, dtype=object)}


def write_registers(out: Path, scene: dict, taxonomy: Taxonomy, transform: Affine, crs: str, seed: int) -> None:
    """``parcels.gpkg``, ``parcels_prior.gpkg`` and ``crosswalk.csv`` of a scene into ``out``."""
    rng = np.random.default_rng([seed, 4_021])
    leaf, prior = scene["parcel_leaf"], scene["prior_leaf"]
    names = np.array(taxonomy.class_names(4), dtype=object)
    columns = {
        "level4_id": leaf.astype(np.int64),
        "crop": names[leaf],
        **_codes(leaf, scene["labelled"], taxonomy, rng),
    }
    write_parcels(out / PARCELS_FILE, scene["parcel"], columns, transform, crs)
    prior_columns = {"level4_id": prior.astype(np.int64), **_codes(prior, np.ones(len(prior), bool), taxonomy, rng)}
    write_parcels(out / PRIOR_PARCELS_FILE, scene["parcel"], prior_columns, transform, crs, keep=prior > 0)
    write_crosswalk(out / CROSSWALK_FILE, taxonomy)
