"""Read one H2Crop ``.h5`` sample: only the months and modalities asked for, every check, clear errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from h2crop_core.data.schema import H2CROP_SPEC, KEY_SPELLINGS, MODALITIES, Sample, SampleSpec, window_months
from h2crop_core.errors import H2CropError, SettingError
from h2crop_core.taxonomy import UNLABELLED, Taxonomy

if TYPE_CHECKING:
    from h2crop_core.data.normalise import NormStats


class SampleError(H2CropError):
    """A sample file that is unreadable or does not match what the benchmark specifies.

    Attributes:
        path: the file.
        key: the HDF5 key concerned, or None for the file as a whole.
        expected: what was expected.
        found: what was found.
    """

    def __init__(self, path: str | Path, key: str | None, expected: str, found: str):
        self.path, self.key, self.expected, self.found = str(path), key, expected, found
        where = f"{self.path}" + (f" [{key}]" if key else "")
        super().__init__(f"{where}: expected {expected}; found {found}")

    def __reduce__(self):  # four arguments, not the message: pickle them (errors cross process pools)
        return type(self), (self.path, self.key, self.expected, self.found)

    def as_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "key": self.key, "expected": self.expected, "found": self.found}


def sample_name(path: str | Path) -> str:
    """The sample name: the file name without ``.h5``."""
    return Path(path).stem


def find_dataset(handle: h5py.File, modality: str) -> tuple[str, object] | tuple[None, None]:
    """The key and node under which ``modality`` is stored in an open file (either spelling), or Nones."""
    # one HDF5 lookup per spelling tried (``get`` rather than ``in`` then ``[]``): this is the hot path
    for key in KEY_SPELLINGS[modality]:
        node = handle.get(key)
        if node is not None:
            return key, node
    return None, None


@dataclass(frozen=True)
class SampleReader:
    """Reads samples with a fixed window, modality set, taxonomy and normalisation.

    Args:
        window: temporal window (``jun``/``aug``/``oct``/``dec`` or 1..12 months); only those S2 frames
            are read from disk.
        modalities: any of ``s2``, ``enmap``, ``prior``, ``label``; others are not read.
        taxonomy: when given, label and prior values are checked against its class counts (255 allowed).
        stats: when given, ``s2`` and ``enmap`` are z-scored to float32; otherwise returned as stored (int16).
        spec: expected shapes; the benchmark's by default.
    """

    window: str | int = "dec"
    modalities: tuple[str, ...] = MODALITIES
    taxonomy: Taxonomy | None = None
    stats: NormStats | None = None
    spec: SampleSpec = H2CROP_SPEC

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise SettingError(f"unknown modalities {unknown}; expected a subset of {MODALITIES}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if window_months(self.window) > self.spec.months:  # also fails early on a bad window
            raise SettingError(
                f"window {self.window!r} needs {window_months(self.window)} months; the files hold {self.spec.months}"
            )

    @property
    def months(self) -> int:
        return window_months(self.window)

    def __call__(self, path: str | Path) -> Sample:
        return self.read(path)

    def read(self, path: str | Path) -> Sample:
        """Read and check one file.

        Raises:
            SampleError: the file is missing, truncated or corrupt, or a key is missing or has the wrong
                shape, dtype or values.
        """
        path = Path(path)
        sample: Sample = {"name": sample_name(path)}
        try:
            handle = h5py.File(path, "r")
        except FileNotFoundError:
            raise SampleError(path, None, "an existing HDF5 file", "no such file") from None
        except OSError as error:
            raise SampleError(path, None, "a readable HDF5 file", f"{_short(error)} (truncated or corrupt?)") from None
        with handle:
            for modality in self.modalities:
                sample[modality] = self._read_array(handle, path, modality)
        if self.taxonomy is not None:
            for modality in ("label", "prior"):
                if modality in sample:
                    check_class_range(sample[modality], self.taxonomy, path, modality)
        if self.stats is not None:
            sample = self.stats.normalise(sample)
        return sample

    def _read_array(self, handle: h5py.File, path: Path, modality: str) -> np.ndarray:
        key, dataset = find_dataset(handle, modality)
        if key is None:
            spellings = " or ".join(repr(k) for k in KEY_SPELLINGS[modality])
            raise SampleError(
                path, KEY_SPELLINGS[modality][0], f"a dataset named {spellings}", f"keys {sorted(handle.keys())}"
            )
        if not isinstance(dataset, h5py.Dataset):
            raise SampleError(path, key, "a dataset", f"a {type(dataset).__name__}")
        expected_shape = self.spec.shape(modality)
        if dataset.shape != expected_shape:
            raise SampleError(path, key, f"shape {expected_shape}", f"shape {dataset.shape}")
        expected_dtype = self.spec.dtype(modality)
        if dataset.dtype != expected_dtype:
            raise SampleError(path, key, f"dtype {expected_dtype}", f"dtype {dataset.dtype}")
        # Read straight into the final array; for S2 only the window's frames (an HDF5 hyperslab), so
        # the rest of the file is never touched.
        if modality == "s2":
            out = np.empty(self.spec.shape("s2", self.months), dtype=expected_dtype)
            selection = np.s_[: self.months]
        else:
            out = np.empty(expected_shape, dtype=expected_dtype)
            selection = np.s_[...]
        try:
            dataset.read_direct(out, source_sel=selection)
        except (OSError, RuntimeError) as error:
            raise SampleError(
                path, key, "readable data", f"a read error: {_short(error)} (truncated or corrupt?)"
            ) from None
        return out


def read_sample(
    path: str | Path,
    window: str | int = "dec",
    modalities: Iterable[str] = MODALITIES,
    *,
    taxonomy: Taxonomy | None = None,
    stats: NormStats | None = None,
    spec: SampleSpec = H2CROP_SPEC,
) -> Sample:
    """Read one sample; see :class:`SampleReader`."""
    return SampleReader(window, tuple(modalities), taxonomy, stats, spec).read(path)


def check_class_range(stack: np.ndarray, taxonomy: Taxonomy, path: str | Path, modality: str) -> None:
    """Raise :class:`SampleError` if a level holds an id beyond the taxonomy (255 = unlabelled is allowed)."""
    key = KEY_SPELLINGS[modality][0]
    # Fast path: uint8 arithmetic wraps 255 (unlabelled) to 0, so max(v + 1) - 1 is the largest real id.
    largest = (stack + np.uint8(1)).reshape(len(stack), -1).max(axis=1).astype(np.int64) - 1
    if np.all(largest < np.asarray(taxonomy.num_classes)):
        return
    for k, num_classes in enumerate(taxonomy.num_classes):
        counts = np.bincount(stack[k].ravel(), minlength=256)
        counts[UNLABELLED] = 0
        bad = np.flatnonzero(counts[num_classes:]) + num_classes
        if bad.size:
            raise SampleError(
                path,
                key,
                f"level{k + 1} ids 0..{num_classes - 1} or 255 (unlabelled), as the taxonomy has "
                f"{num_classes - 1} level-{k + 1} classes",
                f"id(s) {bad[:8].tolist()} on {int(counts[bad].sum())} pixel(s)",
            )


def _short(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    return text if len(text) < 300 else text[:300] + "..."


def infer_spec(path: str | Path) -> SampleSpec:
    """The :class:`SampleSpec` of a sample file (months, bands, tile size), to read datasets that differ
    from the benchmark (another tile size, a sensor with another band count) with the same checks."""
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise SampleError(path, None, "a readable HDF5 file", _short(error)) from None
    with handle:
        shapes = {}
        for modality in ("s2", "enmap"):
            key, node = find_dataset(handle, modality)
            if key is None:
                raise SampleError(
                    path,
                    KEY_SPELLINGS[modality][0],
                    "a dataset to infer the sample layout from",
                    f"keys {sorted(handle.keys())}",
                )
            if not isinstance(node, h5py.Dataset):
                raise SampleError(path, key, "a dataset", f"a {type(node).__name__}")
            shapes[modality] = node.shape
    s2, enmap = shapes["s2"], shapes["enmap"]
    if len(s2) != 4 or len(enmap) != 3 or s2[-1] != s2[-2] or enmap[-1] == 0 or s2[-1] % enmap[-1]:
        raise SampleError(path, None, "S2 (T, bands, H, H) and EnMAP (bands, H/f, H/f)", f"S2 {s2} and EnMAP {enmap}")
    return SampleSpec(months=s2[0], s2_bands=s2[1], enmap_bands=enmap[0], size=s2[-1], enmap_factor=s2[-1] // enmap[-1])


#: sample files whose headers :func:`infer_dataset_spec` reads.
SPEC_PROBES = 8


def infer_dataset_spec(paths: Sequence[str | Path], probes: int = SPEC_PROBES) -> SampleSpec:
    """The :class:`SampleSpec` of a dataset: the most common layout among the headers of up to ``probes``
    files spread over ``paths`` (the first one included). Unreadable or misshaped files are skipped, so one
    bad file among the probes neither decides the layout nor stops the inference: checking every file
    against the layout is the reader's job.

    Raises:
        SampleError: of the first probed file, when no probed file could be read.
        ValueError: ``paths`` is empty.
    """
    if not paths:
        raise ValueError("no sample files to infer the sample layout from")
    count = min(probes, len(paths))
    picks = sorted({round(i * (len(paths) - 1) / max(1, count - 1)) for i in range(count)})  # first and last included
    specs: list[SampleSpec] = []
    errors: list[SampleError] = []
    for i in picks:
        try:
            specs.append(infer_spec(paths[i]))
        except SampleError as error:
            errors.append(error)
    if not specs:
        raise errors[0]
    return Counter(specs).most_common(1)[0][0]  # on a tie, the layout seen first (Counter keeps order)
