"""The four-level crop taxonomy: loading, verification, parents, names, colours and path consistency.

The benchmark ships its taxonomy as a CSV (EuroCrops HCAT3) with one row per level-4 class::

    HCAT3_code, level1_id, level1_name, level2_id, level2_name, level3_id, level3_name, level4_id, level4_name

Ids are 1-based and contiguous per level; 0 is the background class at every level and 255 marks
unlabelled pixels. Levels are 1..4 in names and 0..3 as indices.
"""

from __future__ import annotations

import colorsys
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from h2crop_core.errors import H2CropError
from h2crop_core.files import write_text_atomic

NUM_LEVELS = 4
BACKGROUND = 0
UNLABELLED = 255
CSV_COLUMNS = (
    "HCAT3_code",
    "level1_id",
    "level1_name",
    "level2_id",
    "level2_name",
    "level3_id",
    "level3_name",
    "level4_id",
    "level4_name",
)
TAXONOMY_FILENAME = "cascade_labels.csv"


class TaxonomyError(H2CropError):
    """A taxonomy file that cannot be read or is not a strict four-level tree."""


@dataclass(frozen=True)
class Taxonomy:
    """A verified four-level class tree.

    Attributes:
        names: per level (index 0..3), the class names indexed by class id; id 0 is ``"background"``.
        paths: (num_leaves + 1, 4) int array; row ``i`` is the (level1..level4) id path of level-4 id ``i``;
            row 0 is the all-background path.
        codes: HCAT3 code per level-4 id (index 0 is empty for background).
        source: the file the taxonomy came from, if any.
    """

    names: tuple[tuple[str, ...], ...]
    paths: np.ndarray
    codes: tuple[str, ...]
    source: str | None = None

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_csv(cls, path: str | Path) -> Taxonomy:
        """Load and verify a taxonomy CSV in the benchmark's format.

        Raises:
            TaxonomyError: naming the file, the offending row (1-based data row, header excluded) and the
                rule it breaks.
        """
        path = Path(path)
        if not path.is_file():
            raise TaxonomyError(
                f"{path}: taxonomy file not found (expected a CSV with columns {', '.join(CSV_COLUMNS)})"
            )
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return cls._parse(handle, str(path))

    @classmethod
    def from_csv_text(cls, text: str, source: str = "embedded") -> Taxonomy:
        """Parse CSV text in the benchmark's format (e.g. the copy embedded in a checkpoint)."""
        return cls._parse(io.StringIO(text), source)

    @classmethod
    def _parse(cls, handle, where: str) -> Taxonomy:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise TaxonomyError(f"{where}: missing column(s) {missing}; found {header}")
        reader.fieldnames = header
        rows = []
        for row_number, raw in enumerate(reader, start=1):
            rows.append((row_number, {k: (v or "").strip() for k, v in raw.items() if k is not None}))
        return cls.from_rows(rows, source=where)

    @classmethod
    def from_rows(cls, rows: list[tuple[int, dict[str, str]]], source: str | None = None) -> Taxonomy:
        """Build from parsed CSV rows ``(row_number, {column: value})``; see :meth:`from_csv`."""
        where = source or "taxonomy"
        if not rows:
            raise TaxonomyError(f"{where}: no classes (the CSV has a header but no rows)")
        # parent[k][id] = (parent id at level k-1, first row that said so); name[k][id] = (name, row)
        parent: list[dict[int, tuple[int, int]]] = [{} for _ in range(NUM_LEVELS)]
        name: list[dict[int, tuple[str, int]]] = [{} for _ in range(NUM_LEVELS)]
        leaf_rows: dict[int, int] = {}
        codes: dict[int, str] = {}
        for row_number, row in rows:
            ids = []
            for level in range(1, NUM_LEVELS + 1):
                text = row.get(f"level{level}_id", "")
                try:
                    value = int(text)
                except ValueError:
                    raise TaxonomyError(
                        f"{where}: row {row_number}: level{level}_id must be an integer, found {text!r}"
                    ) from None
                if not 1 <= value <= 254:
                    raise TaxonomyError(
                        f"{where}: row {row_number}: level{level}_id must be in 1..254 "
                        f"(0 is background, 255 unlabelled), found {value}"
                    )
                ids.append(value)
            leaf = ids[-1]
            if leaf in leaf_rows:
                raise TaxonomyError(
                    f"{where}: row {row_number}: level4_id {leaf} already defined on row {leaf_rows[leaf]}; "
                    "each level-4 class must appear on exactly one row"
                )
            leaf_rows[leaf] = row_number
            codes[leaf] = row.get("HCAT3_code", "")
            for k in range(NUM_LEVELS):
                class_name = row.get(f"level{k + 1}_name", "")
                if not class_name:
                    raise TaxonomyError(f"{where}: row {row_number}: level{k + 1}_name is empty")
                seen_name = name[k].setdefault(ids[k], (class_name, row_number))
                if seen_name[0] != class_name:
                    raise TaxonomyError(
                        f"{where}: row {row_number}: level{k + 1}_id {ids[k]} is named {class_name!r} here but "
                        f"{seen_name[0]!r} on row {seen_name[1]}; one id must have one name"
                    )
                if k == 0:
                    continue
                seen_parent = parent[k].setdefault(ids[k], (ids[k - 1], row_number))
                if seen_parent[0] != ids[k - 1]:
                    raise TaxonomyError(
                        f"{where}: row {row_number}: level{k + 1}_id {ids[k]} has parent level{k}_id {ids[k - 1]} "
                        f"here but {seen_parent[0]} on row {seen_parent[1]}; the taxonomy must be a strict tree "
                        "(one parent per class)"
                    )
        for k in range(NUM_LEVELS):
            present = sorted(name[k])
            expected = list(range(1, len(present) + 1))
            if present != expected:
                gaps = sorted(set(range(1, max(present) + 1)) - set(present))
                raise TaxonomyError(
                    f"{where}: level{k + 1} ids must be contiguous from 1 to {len(present)}; "
                    f"missing {gaps[:10]}{' ...' if len(gaps) > 10 else ''} (max id {max(present)})"
                )
        names = tuple(
            ("background",) + tuple(name[k][i][0] for i in range(1, len(name[k]) + 1)) for k in range(NUM_LEVELS)
        )
        num_leaves = len(names[-1]) - 1
        paths = np.zeros((num_leaves + 1, NUM_LEVELS), dtype=np.int64)
        for leaf in range(1, num_leaves + 1):
            node = leaf
            paths[leaf, NUM_LEVELS - 1] = node
            for k in range(NUM_LEVELS - 1, 0, -1):
                node = parent[k][node][0]
                paths[leaf, k - 1] = node
        codes_tuple = ("",) + tuple(codes[i] for i in range(1, num_leaves + 1))
        return cls(names=names, paths=paths, codes=codes_tuple, source=source)

    # ------------------------------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> tuple[int, ...]:
        """Classes per level including background, e.g. ``(7, 37, 83, 102)`` for the benchmark."""
        return tuple(len(n) for n in self.names)

    def class_names(self, level: int) -> tuple[str, ...]:
        """Names of the classes at ``level`` (1..4), indexed by id; id 0 is ``"background"``."""
        return self.names[_index(level)]

    def parent_map(self, from_level: int, to_level: int) -> np.ndarray:
        """Lookup table sending each class id at ``from_level`` to its ancestor at ``to_level``.

        ``from_level`` must be finer than or equal to ``to_level`` (a coarse class has many children). The
        table has 256 entries so it can index uint8 label arrays directly: 0 maps to 0, 255 (unlabelled) to
        255 and ids outside the taxonomy to 255.
        """
        src, dst = _index(from_level), _index(to_level)
        if src < dst:
            raise ValueError(
                f"parent_map goes from a finer to a coarser level; got level{from_level} -> level{to_level}"
            )
        table = np.full(256, UNLABELLED, dtype=np.uint8)
        table[0] = 0
        for row in self.paths[1:]:
            table[row[src]] = row[dst]
        return table

    def colours(self, level: int) -> np.ndarray:
        """An RGB colour per class at ``level`` as a (num_classes, 3) uint8 array; background is black.

        Hues follow the tree: level-1 classes get separate hue sectors and their descendants vary inside
        them, so a level-4 map reads like its level-1 map at a glance.
        """
        k = _index(level)
        n = self.num_classes[k]
        out = np.zeros((n, 3), dtype=np.uint8)
        level1_ids = self.paths[1:, 0]
        num_l1 = self.num_classes[0] - 1
        for class_id in range(1, n):
            leaves = np.flatnonzero(self.paths[1:, k] == class_id)
            l1 = int(level1_ids[leaves[0]])
            siblings = np.unique(self.paths[1:, k][level1_ids == l1])
            rank = int(np.searchsorted(siblings, class_id))
            sector = (l1 - 1) / num_l1
            spread = 0.8 / num_l1
            hue = (sector + spread * rank / max(len(siblings), 1)) % 1.0
            value = 0.95 - 0.35 * (rank % 3) / 2
            saturation = 0.85 - 0.3 * ((rank // 3) % 2)
            out[class_id] = np.round(np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255)
        return out

    def valid_path_mask(self, stack: np.ndarray) -> np.ndarray:
        """Boolean mask of pixels whose four levels form a path of the tree (all-background included).

        Args:
            stack: integer array with the four levels on axis -3: (4, H, W) or (B, 4, H, W).
        """
        stack = np.asarray(stack)
        if stack.ndim < 3 or stack.shape[-3] != NUM_LEVELS:
            raise ValueError(f"expected a level stack with 4 levels on axis -3, got shape {stack.shape}")
        levels = [np.take(stack, k, axis=-3).astype(np.int64) for k in range(NUM_LEVELS)]
        valid = np.ones(levels[0].shape, dtype=bool)
        for k in range(NUM_LEVELS - 1, 0, -1):
            table = self.parent_map(k + 1, k).astype(np.int64)
            table[UNLABELLED] = -1  # an unlabelled or out-of-range child never has a valid parent
            in_range = (levels[k] >= 0) & (levels[k] < 256)
            parent = np.where(in_range, table[np.clip(levels[k], 0, 255)], -1)
            valid &= parent == levels[k - 1]
        valid &= levels[0] < self.num_classes[0]
        return valid

    def consistency(self, stack: np.ndarray) -> float:
        """Share of pixels whose four levels form a valid path; pixels unlabelled (255) at any level are
        left out. Returns NaN when no pixel is left."""
        stack = np.asarray(stack)
        considered = ~np.any(stack == UNLABELLED, axis=-3)
        total = int(considered.sum())
        if total == 0:
            return float("nan")
        return float((self.valid_path_mask(stack) & considered).sum() / total)

    # ------------------------------------------------------------------------------------------ writing
    def to_csv(self, path: str | Path) -> Path:
        """Write the taxonomy in the benchmark's CSV format."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, self.to_csv_text())

    def to_csv_text(self) -> str:
        """The taxonomy as CSV text in the benchmark's format."""
        handle = io.StringIO()
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for leaf in range(1, len(self.paths)):
            row = [self.codes[leaf]]
            for k in range(NUM_LEVELS):
                class_id = int(self.paths[leaf, k])
                row += [class_id, self.names[k][class_id]]
            writer.writerow(row)
        return handle.getvalue()

    def summary(self) -> str:
        """One line: classes per level without background, and the tree check."""
        counts = "/".join(str(n - 1) for n in self.num_classes)
        return f"{counts} classes per level (background excluded), strict tree, from {self.source or 'memory'}"


def _index(level: int) -> int:
    if level not in range(1, NUM_LEVELS + 1):
        raise ValueError(f"levels are numbered 1..{NUM_LEVELS}, got {level}")
    return level - 1


def resolve_taxonomy_path(data_root: str | Path | None, override: str | Path | None = None) -> Path:
    """The taxonomy to use: ``override`` if given, else ``<data_root>/cascade_labels.csv``."""
    if override is not None:
        return Path(override)
    if data_root is None:
        raise TaxonomyError("no taxonomy given: pass --taxonomy CSV or a data root holding cascade_labels.csv")
    return Path(data_root) / TAXONOMY_FILENAME


def load_taxonomy(data_root: str | Path | None, override: str | Path | None = None) -> Taxonomy:
    """Load the taxonomy at :func:`resolve_taxonomy_path`."""
    return Taxonomy.from_csv(resolve_taxonomy_path(data_root, override))
