"""Command-line options built from the settings dataclasses (:mod:`pipelines.settings`).

Each field becomes ``--field-name`` (or the flags its metadata names) with the field's type, default, help
and choices; a bool defaulting to False is a switch, one defaulting to True gets ``--no-...``. A field
without a default is a required option. Nothing here restates a default.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

Settings = TypeVar("Settings")

#: annotation text (``from __future__ import annotations`` keeps them as strings) -> argparse type
_TYPES = {"int": int, "float": float, "str": str}


def _scalar_type(annotation: str) -> type | None:
    """``"float | None"`` -> float; ``"bool"`` -> bool; anything else (dict, tuples) -> None: not an option."""
    parts = [part.strip() for part in str(annotation).split("|") if part.strip() != "None"]
    if len(parts) != 1:
        return None
    return bool if parts[0] == "bool" else _TYPES.get(parts[0])


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are command-line options."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and _scalar_type(f.type) is not None]


def option_flags(item: dataclasses.Field) -> tuple[str, ...]:
    """``--field-name``, or the flags the field's metadata names instead (kept from older command lines)."""
    return tuple(item.metadata.get("flags", ())) or (f"--{item.name.replace('_', '-')}",)


def add_settings_options(parser: argparse.ArgumentParser, cls: type, *, only: tuple[str, ...] | None = None) -> None:
    """Add one option per field of ``cls`` (or of the fields named in ``only``) to ``parser``."""
    group = parser.add_argument_group(f"settings (defaults: {cls.__name__} in pipelines/settings.py)")
    for item in cli_fields(cls):
        if only is not None and item.name not in only:
            continue
        kind = _scalar_type(item.type)
        help_text = item.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": item.name, "help": help_text}
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = item.default
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if item.default else "store_true"
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = (
                item.name.split("_")[-1].upper() if kind is str and not item.metadata.get("choices") else None
            )
            if item.metadata.get("choices"):
                kwargs["choices"] = item.metadata["choices"]
            if "default" in kwargs and kwargs["default"] not in (None, "") and "(default" not in help_text:
                kwargs["help"] = f"{help_text} (default: {item.default})"
        group.add_argument(*option_flags(item), **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def settings_from_args(cls: type[Settings], args: argparse.Namespace, **extra: Any) -> Settings:
    """A ``cls`` from the parsed options (those the parser has) plus ``extra`` values."""
    values = {item.name: getattr(args, item.name) for item in cli_fields(cls) if hasattr(args, item.name)}
    return cls(**{**values, **extra})
