"""Per-band normalisation statistics (z-scoring) and their one serialised form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from h2crop_core.data.index import DatasetError
from h2crop_core.data.schema import Sample
from h2crop_core.errors import MissingFileError
from h2crop_core.files import write_text_atomic

#: the statistics' array fields, in the order every serialised form lists them
STAT_FIELDS = ("s2_mean", "s2_std", "enmap_mean", "enmap_std")


@dataclass(frozen=True)
class NormStats:
    """Per-band mean and std of S2 (10 bands) and EnMAP; ``normalise`` z-scores a sample with them."""

    s2_mean: np.ndarray
    s2_std: np.ndarray
    enmap_mean: np.ndarray
    enmap_std: np.ndarray
    meta: dict = field(default_factory=dict)

    def normalise(self, sample: Sample) -> Sample:
        """Return a copy of ``sample`` with ``s2`` and ``enmap`` as float32 z-scores (other keys shared)."""
        out = dict(sample)
        if "s2" in out:
            out["s2"] = _zscore(out["s2"], self.s2_mean, self.s2_std, channel_axis=-3)
        if "enmap" in out:
            out["enmap"] = _zscore(out["enmap"], self.enmap_mean, self.enmap_std, channel_axis=-3)
        return out

    def to_dict(self) -> dict:
        """Plain lists (JSON-able, picklable, ``torch.load(weights_only=True)``-safe); :meth:`from_dict` inverts it."""
        return {
            **{name: np.asarray(getattr(self, name), dtype=np.float64).tolist() for name in STAT_FIELDS},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        """Rebuild from :meth:`to_dict` output (lists, arrays or tensors)."""
        arrays = {name: np.asarray(data[name], dtype=np.float64) for name in STAT_FIELDS}
        return cls(**arrays, meta=dict(data.get("meta") or {}))

    def to_json(self, path: str | Path) -> Path:
        """Write in the layout of the published statistics (``S2``/``EnMAP`` with ``mean``/``std``)."""
        path = Path(path)
        payload = {
            "description": "Per-band mean/std of the raw values over the training split (h2crop stats).",
            "S2": {"num_bands": len(self.s2_mean), "mean": self.s2_mean.tolist(), "std": self.s2_std.tolist()},
            "EnMAP": {
                "num_bands": len(self.enmap_mean),
                "mean": self.enmap_mean.tolist(),
                "std": self.enmap_std.tolist(),
            },
            **({"meta": self.meta} if self.meta else {}),
        }
        return write_text_atomic(path, json.dumps(payload, indent=1))  # never a half-written stats file

    @classmethod
    def from_json(cls, path: str | Path) -> NormStats:
        """Read statistics written by :meth:`to_json` or published with the benchmark."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
            arrays = {
                f"{prefix}_{what}": np.asarray(payload[key][what], dtype=np.float64)
                for prefix, key in (("s2", "S2"), ("enmap", "EnMAP"))
                for what in ("mean", "std")
            }
        except FileNotFoundError:
            raise MissingFileError(
                f"{path}: normalisation statistics not found; run `h2crop stats --data ROOT`"
            ) from None
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise DatasetError(
                f"{path}: expected JSON with S2/EnMAP mean and std lists; {type(error).__name__}: {error}"
            ) from None
        for name, values in arrays.items():
            bad = ~np.isfinite(values) | (values <= 0) if name.endswith("std") else ~np.isfinite(values)
            if np.any(bad):
                raise DatasetError(
                    f"{path}: {name} has non-positive or non-finite entries at bands {np.flatnonzero(bad).tolist()}"
                )
        return cls(**arrays, meta=payload.get("meta", {}))


def _zscore(values: np.ndarray, mean: np.ndarray, std: np.ndarray, channel_axis: int) -> np.ndarray:
    shape = [1] * values.ndim
    shape[channel_axis] = -1
    if values.shape[channel_axis] != len(mean):
        raise DatasetError(f"normalisation statistics have {len(mean)} bands; data has {values.shape[channel_axis]}")
    scale = (1.0 / std).astype(np.float32).reshape(shape)
    offset = mean.astype(np.float32).reshape(shape)
    out = values.astype(np.float32)  # one new array, then in place: this runs for every sample read
    out -= offset
    out *= scale
    return out
