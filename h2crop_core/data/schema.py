"""What an H2Crop sample is: HDF5 key spellings, shapes, dtypes, temporal windows and the Sample dict.

The code uses one spelling everywhere (``s2``, ``enmap``, ``prior``, ``label``, ``name``); the two spellings
found in the wild (the published README and the files themselves) exist only here and in the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from h2crop_core.errors import SettingError

#: modality -> accepted HDF5 keys, the files' own spelling first.
KEY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "s2": ("S2_data", "S2"),
    "enmap": ("EnMAP_data", "EnMAP"),
    "label": ("label",),
    "prior": ("priors", "prior"),
}
#: the keys written by ``synth --key-style``: ``files`` as the data ships, ``readme`` as documented.
KEY_STYLES: dict[str, dict[str, str]] = {
    "files": {m: keys[0] for m, keys in KEY_SPELLINGS.items()},
    "readme": {"s2": "S2", "enmap": "EnMAP", "label": "label", "prior": "prior"},
}
MODALITIES = ("s2", "enmap", "prior", "label")
#: named temporal windows: the first T months (January first).
WINDOWS: dict[str, int] = {"jun": 6, "aug": 8, "oct": 10, "dec": 12}


def window_months(window: str | int) -> int:
    """Number of months T of a temporal window: ``jun``=6, ``aug``=8, ``oct``=10, ``dec``=12 or 1..12."""
    if isinstance(window, str) and window.lower() in WINDOWS:
        return WINDOWS[window.lower()]
    try:
        months = int(window)
    except (TypeError, ValueError):
        raise SettingError(
            f"temporal window must be one of {sorted(WINDOWS)} or an integer 1-12, got {window!r}"
        ) from None
    if not 1 <= months <= 12:
        raise SettingError(f"temporal window must be 1-12 months, got {months}")
    return months


@dataclass(frozen=True)
class SampleSpec:
    """Shapes and dtypes of one sample file. The default is the H2Crop benchmark's.

    Attributes:
        months: S2 frames stored per file (T axis).
        s2_bands: Sentinel-2 bands per frame.
        enmap_bands: hyperspectral bands.
        size: side of the S2/label/prior grid in pixels (10 m).
        enmap_factor: S2 pixels per EnMAP pixel along each axis (30 m / 10 m).
    """

    months: int = 12
    s2_bands: int = 10
    enmap_bands: int = 218
    size: int = 192
    enmap_factor: int = 3

    def __post_init__(self) -> None:
        if self.size % self.enmap_factor:
            raise SettingError(f"size {self.size} is not divisible by the EnMAP factor {self.enmap_factor}")

    @property
    def enmap_size(self) -> int:
        return self.size // self.enmap_factor

    def shape(self, modality: str, months: int | None = None) -> tuple[int, ...]:
        """Shape of ``modality`` in a file, or after reading ``months`` frames for ``s2``."""
        if modality == "s2":
            return (self.months if months is None else months, self.s2_bands, self.size, self.size)
        if modality == "enmap":
            return (self.enmap_bands, self.enmap_size, self.enmap_size)
        if modality in ("label", "prior"):
            return (4, self.size, self.size)
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")

    @staticmethod
    def dtype(modality: str) -> np.dtype:
        return np.dtype(np.int16) if modality in ("s2", "enmap") else np.dtype(np.uint8)


H2CROP_SPEC = SampleSpec()


class Sample(TypedDict, total=False):
    """One sample. Arrays are NumPy in the reader and torch tensors after collation.

    Keys: ``s2`` (T, 10, H, W), ``enmap`` (bands, H/3, W/3), ``prior`` (4, H, W), ``label`` (4, H, W) and
    ``name``. Batches add a leading batch axis.
    """

    s2: np.ndarray
    enmap: np.ndarray
    prior: np.ndarray
    label: np.ndarray
    name: str
