"""The generated taxonomy: a random strict 4-level tree shaped like the benchmark's.

Its own module (NumPy only) so that code without rasterio (``benchmarks/gpu_check.py``) can build one.
"""

from __future__ import annotations

import numpy as np

from h2crop_core.errors import SettingError
from h2crop_core.taxonomy import NUM_LEVELS, Taxonomy

#: class counts per level of the generated taxonomy (background excluded), as in the benchmark.
DEFAULT_TREE = (6, 36, 82, 101)
LEVEL1_NAMES = ("arable", "grassland", "permanent", "forest", "fallow", "unmaintained", "wetland", "orchard")


def generate_taxonomy(counts: tuple[int, ...] = DEFAULT_TREE, seed: int = 0) -> Taxonomy:
    """A random strict tree with ``counts`` classes per level; level 1 long-tailed like the benchmark's
    (one level-1 class holds most leaves, most level-3 nodes have a single child)."""
    if len(counts) != NUM_LEVELS or any(b < a for a, b in zip(counts, counts[1:])) or counts[0] < 1:
        raise SettingError(f"need 4 non-decreasing positive class counts, got {counts}")
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
