"""Shared fixtures: small generated datasets and the benchmark's metadata from ../shared (when present)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from h2crop_core.data.synth import synthesize_dataset
from h2crop_core.taxonomy import Taxonomy

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_taxonomy_csv() -> Path:
    """The benchmark's own taxonomy CSV, read from ../shared (never copied into the repo)."""
    path = SHARED_DATA / "cascade_labels.csv"
    if not path.is_file():
        pytest.skip(f"benchmark taxonomy not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_norm_stats() -> Path:
    path = SHARED_DATA / "h2crop_norm_stats.json"
    if not path.is_file():
        pytest.skip(f"published normalisation statistics not found at {path}")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-sample generated dataset (with a small region), shared read-only by the session's tests."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize_dataset(root, 12, seed=3, region_size=192, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_taxonomy(synth_root: Path) -> Taxonomy:
    return Taxonomy.from_csv(synth_root / "cascade_labels.csv")


@pytest.fixture(scope="session")
def _pristine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "data"
    synthesize_dataset(root, 6, seed=11, region_size=None, progress=False)
    return root


@pytest.fixture()
def writable_root(tmp_path: Path, _pristine_root: Path) -> Path:
    """A fresh copy of a 6-sample dataset that a test may damage."""
    return Path(shutil.copytree(_pristine_root, tmp_path / "data"))
