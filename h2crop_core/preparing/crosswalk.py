"""Crop codes -> the taxonomy's classes.

A parcel register names crops by code: national ones (the French RPG's ``CODE_CULTU``, Germany's ``NC_FESTG``)
or already harmonised HCAT3 codes (EuroCrops' ``EC_hcat_c``, what the benchmark's taxonomy file lists per
level-4 class in ``HCAT3_code``). HCAT3 codes map directly; national codes go through a crosswalk CSV in
EuroCrops' country-table layout (columns ``original_code`` and ``HCAT3_code``; others, such as
``original_name``, are kept for the report). A code that reaches no class is *unknown*: its parcels are
unlabelled (255), never background, and every such code is reported with its parcel count and area.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from h2crop_core.errors import H2CropError
from h2crop_core.taxonomy import Taxonomy

CROSSWALK_COLUMNS = ("original_code", "HCAT3_code")


class CrosswalkError(H2CropError):
    """A crosswalk or code column that cannot be used as asked (the message names the file and column)."""


def normalise_code(value) -> str:
    """A code as text: ``3301090100``, ``3301090100.0`` and ``" 3301090100 "`` are one code; None and NaN are ""
    (registers store numeric codes as integers, floats or text depending on the format)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if np.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text


@dataclass(frozen=True)
class Crosswalk:
    """National code -> HCAT3 code, from a EuroCrops-layout CSV.

    Attributes:
        to_hcat3: original code -> HCAT3 code.
        names: original code -> its name in the table (``original_name`` or ``translated_name``), if any.
        source: the file.
    """

    to_hcat3: dict[str, str]
    names: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_csv(cls, path: str | Path) -> Crosswalk:
        """Read a crosswalk CSV (comma or semicolon separated).

        Raises:
            CrosswalkError: the file is missing, lacks a column, or maps one code to two HCAT3 codes.
        """
        path = Path(path)
        if not path.is_file():
            raise CrosswalkError(
                f"{path}: crosswalk not found (expected a CSV with columns {', '.join(CROSSWALK_COLUMNS)})"
            )
        text = path.read_text(encoding="utf-8-sig")
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
        rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
        header = list(rows[0]) if rows else []
        missing = [c for c in CROSSWALK_COLUMNS if c not in header]
        if missing:
            raise CrosswalkError(
                f"{path}: missing column(s) {missing}; a crosswalk has EuroCrops' country-table columns "
                f"{', '.join(CROSSWALK_COLUMNS)} (found {header})"
            )
        to_hcat3: dict[str, str] = {}
        names: dict[str, str] = {}
        for number, row in enumerate(rows, start=2):
            original, hcat3 = normalise_code(row["original_code"]), normalise_code(row["HCAT3_code"])
            if not original:
                continue
            if to_hcat3.get(original, hcat3) != hcat3:
                raise CrosswalkError(
                    f"{path}: line {number}: original_code {original!r} maps to {hcat3!r} here and to "
                    f"{to_hcat3[original]!r} above; one code, one HCAT3 code"
                )
            to_hcat3[original] = hcat3
            name = row.get("original_name") or row.get("translated_name") or ""
            if name:
                names[original] = name.strip()
        return cls(to_hcat3, names, str(path))


@dataclass
class CodeClasses:
    """Each parcel's level-4 class, and what each code became.

    Attributes:
        leaf: per parcel, its level-4 id (0 never: unknown codes are 255).
        codes: per code: parcels, area (ha), the HCAT3 code it went through, the level-4 id (or None) and, when
            unknown, why.
    """

    leaf: np.ndarray
    codes: dict[str, dict]

    def coverage(self) -> dict:
        """Parcels and area known and unknown, and the unknown codes by area (largest first)."""
        known = [c for c in self.codes.values() if c["level4_id"] is not None]
        unknown = {k: c for k, c in self.codes.items() if c["level4_id"] is None}
        total_area = sum(c["area_ha"] for c in self.codes.values()) or 1.0
        return {
            "codes": len(self.codes),
            "codes_unknown": len(unknown),
            "parcels": int(sum(c["parcels"] for c in self.codes.values())),
            "parcels_unknown": int(sum(c["parcels"] for c in unknown.values())),
            "area_ha": round(sum(c["area_ha"] for c in self.codes.values()), 2),
            "area_known_share": round(sum(c["area_ha"] for c in known) / total_area, 4),
            "unknown": dict(sorted(unknown.items(), key=lambda item: -item[1]["area_ha"])),
        }


def classes_of_codes(
    codes: list, areas_ha: np.ndarray, taxonomy: Taxonomy, crosswalk: Crosswalk | None = None
) -> CodeClasses:
    """Each parcel's level-4 id from its code: through ``crosswalk`` when given (original code -> HCAT3), then
    the taxonomy's ``HCAT3_code`` column. Unknown codes (not in the crosswalk, an HCAT3 code the taxonomy
    lacks, or no code) give 255."""
    by_hcat3 = {normalise_code(code): leaf for leaf, code in enumerate(taxonomy.codes) if leaf and code}
    names = taxonomy.class_names(4)
    leaf = np.full(len(codes), 255, dtype=np.uint8)
    table: dict[str, dict] = {}
    for index, raw in enumerate(codes):
        code = normalise_code(raw)
        entry = table.get(code)
        if entry is None:
            entry = table[code] = _resolve(code, by_hcat3, names, crosswalk)
        entry["parcels"] += 1
        entry["area_ha"] += float(areas_ha[index])
        if entry["level4_id"] is not None:
            leaf[index] = entry["level4_id"]
    for entry in table.values():
        entry["area_ha"] = round(entry["area_ha"], 3)
    return CodeClasses(leaf, table)


def _resolve(code: str, by_hcat3: dict[str, int], names: tuple[str, ...], crosswalk: Crosswalk | None) -> dict:
    entry = {"parcels": 0, "area_ha": 0.0, "hcat3": None, "level4_id": None, "class": None, "why": None}
    if not code:
        entry["why"] = "no code"
        return entry
    if crosswalk is not None:
        hcat3 = crosswalk.to_hcat3.get(code)
        entry["name"] = crosswalk.names.get(code)
        if hcat3 is None:
            entry["why"] = f"not in the crosswalk {Path(crosswalk.source).name}"
            return entry
    else:
        hcat3 = code
    entry["hcat3"] = hcat3
    leaf = by_hcat3.get(hcat3)
    if leaf is None:
        entry["why"] = f"HCAT3 code {hcat3} is not in the taxonomy"
        return entry
    entry["level4_id"], entry["class"] = leaf, names[leaf]
    return entry


def check_code_column(columns: list[str], column: str, where: str) -> None:
    """Refuse a code column the register does not have, listing the ones it has."""
    if column not in columns:
        shown = ", ".join(c for c in columns if c != "geometry")
        raise CrosswalkError(f"{where}: no column {column!r} (--code-column); its columns: {shown}")
