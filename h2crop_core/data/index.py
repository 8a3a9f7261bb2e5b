"""The dataset root: ``<root>/h5_data/*.h5`` and ``<root>/data_lists/{train,val,test}.txt``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from h2crop_core.errors import H2CropError

SPLITS = ("train", "val", "test")
H5_DIR = "h5_data"
#: the published data spells the folder ``data_lists``; the research configs ``data_list``.
LIST_DIRS = ("data_lists", "data_list")
NORM_STATS_FILENAME = "norm_stats.json"


class DatasetError(H2CropError):
    """A dataset root, split list or split member that is missing or malformed."""


@dataclass(frozen=True)
class DatasetIndex:
    """Locates the files of a dataset root.

    Args:
        root: the dataset root (holding ``h5_data/`` and ``data_lists/`` or ``data_list/``).
    """

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found")
        if not self.h5_dir.is_dir():
            raise DatasetError(f"{self.root}: expected a folder {H5_DIR}/ holding the .h5 samples; not found")

    @property
    def h5_dir(self) -> Path:
        return self.root / H5_DIR

    @property
    def list_dir(self) -> Path:
        """The split-list folder; ``data_lists`` preferred over ``data_list``."""
        for name in LIST_DIRS:
            if (self.root / name).is_dir():
                return self.root / name
        raise DatasetError(
            f"{self.root}: expected a folder {' or '.join(d + '/' for d in LIST_DIRS)} with split lists; none found"
        )

    @property
    def norm_stats_path(self) -> Path:
        return self.root / NORM_STATS_FILENAME

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.list_dir / f"{split}.txt"

    def split_names(self, split: str) -> list[str]:
        """Sample names of a split, in file order (a trailing ``.h5`` is tolerated)."""
        path = self.split_file(split)
        if not path.is_file():
            raise DatasetError(f"{path}: split list not found")
        names = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line[:-3] if line.endswith(".h5") else line)
        if not names:
            raise DatasetError(f"{path}: split list is empty (expected one sample name per line)")
        return names

    def sample_path(self, name: str) -> Path:
        return self.h5_dir / f"{name}.h5"

    def split_paths(self, split: str, *, check_exists: bool = True) -> list[Path]:
        """Paths of a split's samples.

        Raises:
            DatasetError: listing every missing file of the split in one message.
        """
        paths = [self.sample_path(n) for n in self.split_names(split)]
        if check_exists:
            missing = [p for p in paths if not p.is_file()]
            if missing:
                shown = "\n  ".join(str(p) for p in missing[:20])
                more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
                raise DatasetError(
                    f"{self.split_file(split)}: {len(missing)} of {len(paths)} listed sample(s) missing from "
                    f"{self.h5_dir}:\n  {shown}{more}"
                )
        return paths

    def all_paths(self) -> list[Path]:
        """Every ``.h5`` file under ``h5_data/``, sorted."""
        return sorted(self.h5_dir.glob("*.h5"))

    def available_splits(self) -> list[str]:
        try:
            folder = self.list_dir
        except DatasetError:
            return []
        return [s for s in SPLITS if (folder / f"{s}.txt").is_file()]

    def fingerprint(self, splits: tuple[str, ...] | None = None) -> str:
        """A short hash of the split lists and each sample file's name, size and modification time (of the
        ``splits``, default every file): changes when the data does. Fixed-shape HDF5 files keep their size
        when their content changes, so the time counts too: a copy that does not keep the times (``cp``
        without ``-p``) reads as other data."""
        digest = hashlib.sha256()
        for split in splits or self.available_splits():
            digest.update(self.split_file(split).read_bytes())
        paths = (
            sorted({p for s in splits for p in self.split_paths(s, check_exists=False)}) if splits else self.all_paths()
        )
        for path in paths:
            stat = path.stat() if path.is_file() else None
            digest.update(f"{path.name}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """Per split: files, bytes and the latest modification (UTC): what a changed fingerprint changed."""
        import datetime

        found = {}
        for split in self.available_splits():
            stats = [p.stat() for p in self.split_paths(split, check_exists=False) if p.is_file()]
            newest = max((s.st_mtime for s in stats), default=0.0)
            found[split] = {
                "files": len(stats),
                "bytes": sum(s.st_size for s in stats),
                "latest_change": datetime.datetime.fromtimestamp(newest, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
        return found
