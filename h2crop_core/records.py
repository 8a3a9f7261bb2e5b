"""What differs between two JSON records (a map's resume record, a training run's): one line per leaf,
named by its path, so that a refusal says which file, setting or field changed instead of printing both
records whole."""

from __future__ import annotations

import json


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
