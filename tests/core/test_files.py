"""Outputs are written atomically: an interrupted write leaves the old file or none, never a part of one."""

import hashlib
import json
import os

import numpy as np
import pytest

from h2crop_core import files
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.stats import plot_norm_stats
from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.data.validate import ValidationReport
from h2crop_core.metrics import HierarchicalConfusion
from h2crop_core.report import build_metrics, write_report


class _HalfWriter:
    """A file that writes half of what it is given, then fails like a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(bytes(data)[: len(data) // 2])
        self.file.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture()
def disk_full(monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode="r", *a, **k: _HalfWriter(real_fdopen(fd, mode, *a, **k)))


def _write_metrics(folder):
    taxonomy = generate_taxonomy((2, 4, 4, 9), seed=1)
    confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    label = np.moveaxis(taxonomy.paths[np.arange(1, 10).repeat(4).reshape(6, 6)], -1, 0).astype(np.uint8)
    confusion.update(label, label, label)
    return write_report(build_metrics(confusion, "test"), confusion, folder, taxonomy)


def _write_validation(folder):
    return ValidationReport(str(folder), None, None, checked=3, good=3).to_json(folder / "validation.json")


@pytest.mark.parametrize("write, name", [(_write_metrics, "metrics.json"), (_write_validation, "validation.json")])
def test_an_interrupted_write_keeps_the_old_file_or_none(tmp_path, disk_full, write, name):
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    fresh.mkdir()
    kept.mkdir()
    (kept / name).write_text('{"old": true}')
    for folder in (fresh, kept):
        with pytest.raises(OSError, match="No space left"):
            write(folder)
        assert not [p.name for p in folder.iterdir() if p.name.endswith(files.PARTIAL)]
    assert not (fresh / name).exists()
    assert json.loads((kept / name).read_text()) == {"old": True}


def test_a_report_is_complete_json_csv_npz_and_png(tmp_path):
    written = _write_metrics(tmp_path)
    assert json.loads(written["metrics"].read_text())["split"] == "test"
    assert written["per_class_level1"].read_bytes().startswith(b"id,name,iou,precision,recall,f1,support\r\n")
    assert set(np.load(written["confusion"])) >= {"all_level1", "changed_level4"}
    pngs = [p for role, p in written.items() if p.suffix == ".png"]
    assert len(pngs) == 9 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    plot = plot_norm_stats(NormStats(np.ones(10), np.ones(10), np.ones(218), np.ones(218)), tmp_path / "norm_stats.png")
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.glob(f"*{files.PARTIAL}"))


def test_written_files_get_the_usual_mode_and_a_content_digest(tmp_path):
    path = files.write_text_atomic(tmp_path / "a.txt", "hello")
    assert path.stat().st_mode & 0o777 == files.FILE_MODE
    assert files.file_digest(path) == hashlib.sha256(b"hello").hexdigest()
