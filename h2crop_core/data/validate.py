"""Check every file of a dataset (or one split) and report the bad ones with reasons."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from h2crop_core.data.index import DatasetError, DatasetIndex
from h2crop_core.data.reader import SampleError, SampleReader, infer_dataset_spec
from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.files import write_text_atomic
from h2crop_core.parallel import map_with_progress
from h2crop_core.taxonomy import Taxonomy

VALIDATION_FILENAME = "validation.json"


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_dataset`."""

    root: str
    split: str | None
    taxonomy: str | None
    checked: int = 0
    good: int = 0
    bad: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing

    def summary(self) -> str:
        scope = f"split {self.split!r}" if self.split else "all files"
        lines = [
            f"{self.root} ({scope}): {self.good} good, {len(self.bad)} bad of {self.checked} checked in {self.seconds:.1f} s"
        ]
        if self.missing:
            lines.append(f"{len(self.missing)} sample(s) listed in split files but missing from h5_data/:")
            lines += [f"  {name}" for name in self.missing[:20]]
            if len(self.missing) > 20:
                lines.append(f"  ... and {len(self.missing) - 20} more")
        for entry in self.bad[:50]:
            key = f" [{entry['key']}]" if entry.get("key") else ""
            lines.append(f"  BAD {entry['path']}{key}: expected {entry['expected']}; found {entry['found']}")
        if len(self.bad) > 50:
            lines.append(f"  ... and {len(self.bad) - 50} more bad files (all in the JSON report)")
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {
            "root": self.root,
            "split": self.split,
            "taxonomy": self.taxonomy,
            "checked": self.checked,
            "good": self.good,
            "ok": self.ok,
            "bad": self.bad,
            "missing": self.missing,
            "seconds": round(self.seconds, 3),
        }
        return write_text_atomic(path, json.dumps(payload, indent=1))


@dataclass(frozen=True)
class _CheckFile:
    """Picklable per-file check: read everything, every check on."""

    taxonomy: Taxonomy | None
    spec: SampleSpec

    def __call__(self, path: Path) -> dict | None:
        try:
            SampleReader("dec", taxonomy=self.taxonomy, spec=self.spec).read(path)
        except SampleError as error:
            return error.as_dict()
        return None


def validate_dataset(
    root: str | Path,
    split: str | None = None,
    *,
    taxonomy: Taxonomy | None = None,
    spec: SampleSpec | None = None,
    workers: int = 1,
    progress: bool = True,
) -> ValidationReport:
    """Read every file of ``split`` (or every ``.h5`` under ``h5_data/`` plus every split's members) with
    all checks. Bad files never stop the run: they are all collected in the report.

    Args:
        root: the dataset root.
        split: one split, or None for every file.
        taxonomy: when given, label and prior ids are checked against it.
        spec: the layout every file must have; by default the one most of the files have
            (:func:`~h2crop_core.data.reader.infer_dataset_spec`), or the benchmark's when no file's header
            can be read (then every file is reported bad, with its reason).
        workers: reader processes.
    """
    index = DatasetIndex(root)
    report = ValidationReport(str(index.root), split, taxonomy.source if taxonomy else None)
    start = time.perf_counter()
    if split is not None:
        paths = index.split_paths(split, check_exists=False)
        splits = [split]
    else:
        paths = index.all_paths()
        splits = index.available_splits()
    for name in splits:
        try:
            listed = index.split_paths(name, check_exists=False)
        except DatasetError as error:
            report.bad.append(
                {"path": str(index.split_file(name)), "key": None, "expected": "a split list", "found": str(error)}
            )
            continue
        report.missing += [p.stem for p in listed if not p.is_file()]
    existing = [p for p in paths if p.is_file()]
    check = _CheckFile(taxonomy, spec or _layout_of(existing))
    for _path, problem in zip(
        existing, map_with_progress(check, existing, workers=workers, desc="validate", progress=progress)
    ):
        report.checked += 1
        if problem is None:
            report.good += 1
        else:
            report.bad.append(problem)
    report.missing = sorted(set(report.missing))
    report.seconds = time.perf_counter() - start
    return report


def _layout_of(paths: list[Path]) -> SampleSpec:
    """The layout most of ``paths`` have, or the benchmark's if none of them can be read."""
    try:
        return infer_dataset_spec(paths) if paths else H2CROP_SPEC
    except SampleError:
        return H2CROP_SPEC
