"""What differs between two JSON records (a map's resume record, a training run's): one line per leaf,
named by its path, so that a refusal says which file, setting or field changed instead of printing both
records whole."""

from __future__ import annotations

import json
from pathlib import Path

from h2crop_core.files import write_text_atomic


def record_differences(stored, now, where: str = "") -> list[str]:
    """What differs between two resume records, one ``key.path (file name).field: then -> now`` per leaf."""
    if isinstance(stored, dict) and isinstance(now, dict):
        found: list[str] = []
        for key in sorted(set(stored) | set(now), key=str):
            found += record_differences(stored.get(key), now.get(key), f"{where}.{key}" if where else str(key))
        return found
    if isinstance(stored, list) and isinstance(now, list) and len(stored) == len(now) and stored != now:
        found = []
        for index, (a, b) in enumerate(zip(stored, now)):
            named = f" ({a['name']})" if isinstance(a, dict) and a.get("name") == (b or {}).get("name") else ""
            found += record_differences(a, b, f"{where}[{index}]{named}")
        return found
    return [] if stored == now else [f"{where}: {_short(stored)} then, {_short(now)} now"]


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else f"{text[:18]}…{text[-18:]}"


def keep_record(
    record_path: Path, record: dict, results: Path, *, run: str, pieces: str, error: type[Exception]
) -> dict:
    """The resume record of a run whose ``pieces`` (tiles, blocks) lie in ``results``: written on first use,
    compared on every later one, so a rerun with other inputs or settings is refused rather than mixed in.

    Args:
        run: what the run is, for messages ("a mapping run").
        error: the exception raised on a mismatch (the caller's user-error class).

    Returns:
        The record in its JSON form (tuples as lists).
    """
    record = json.loads(json.dumps(record))  # the JSON form, so tuples and lists compare equal
    if record_path.is_file():
        try:
            stored = json.loads(record_path.read_text())
        except json.JSONDecodeError:
            raise error(f"{record_path}: unreadable; delete the output folder to start over") from None
        differing = record_differences(stored, record)
        if differing:
            more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
            raise error(
                f"{record_path}: this folder holds {run} made with other inputs or settings: "
                f"{'; '.join(differing[:3])}{more}; choose another output folder, or --overwrite to start over"
            )
    elif any(results.glob("*.npz")):
        raise error(
            f"{results}: holds {pieces} but {record_path} is missing, so what they were made with is unknown; "
            "choose another output folder or delete it to start over"
        )
    else:
        write_text_atomic(record_path, json.dumps(record, indent=1))
    return record
