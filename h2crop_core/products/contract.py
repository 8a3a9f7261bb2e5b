"""The input contract: what a model's input bands are, kept in its checkpoint and checked where it reads rasters.

A model learns from numbers; the contract says what they were: the Sentinel-2 band names in the model's
order and their reflectance convention, and the EnMAP bands' centre wavelengths and their convention.
``h2crop train`` saves it in every checkpoint (the dataset's ``input_contract.json`` when the dataset has
one, else :func:`contract_for` its layout), ``h2crop map`` refuses S2 rasters whose *named* bands or
convention tag contradict it and picks EnMAP product bands by its wavelengths, and ``h2crop evaluate``
refuses a dataset whose contract differs. Unnamed bands (and checkpoints written before contracts) are
read by index, as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from h2crop_core.data.schema import SampleSpec
from h2crop_core.errors import H2CropError
from h2crop_core.files import write_text_atomic
from h2crop_core.mapping.region import RegionError
from h2crop_core.products.harmonise import S2_CONVENTION
from h2crop_core.products.sentinel2 import MODEL_BANDS
from h2crop_core.products.wavelengths import BENCHMARK_ENMAP_NM

#: the model's S2 band order (the benchmark's 10 bands; the published statistics do not name them, see
#: docs/products.md for what this order rests on)
S2_BANDS: tuple[str, ...] = MODEL_BANDS
#: h2crop's EnMAP convention (the L2A product's own): stored = 10000 × reflectance
ENMAP_CONVENTION = "reflectance-x10000"
#: what each convention means, for messages and docs
CONVENTIONS = {
    S2_CONVENTION: "stored value = 10000 × reflectance + 1000 (L2A, processing baseline 04.00 on)",
    ENMAP_CONVENTION: "stored value = 10000 × reflectance",
    "reflectance-x10000-no-offset": "stored value = 10000 × reflectance (L2A before baseline 04.00)",
    "reflectance": "stored value = reflectance (0-1)",
}
#: where the benchmark's 218 EnMAP centre wavelengths come from
BENCHMARK_ENMAP_SOURCE = (
    "nominal EnMAP L2A band centres (EnMAP_Spectral_Bands_update.xlsx, as in TorchGeo's EnMAP.wavelengths), "
    "bands 130-135 left out"
)
#: the GeoTIFF tag naming a raster's S2 reflectance convention (``h2crop composite`` writes it)
S2_CONVENTION_TAG = "h2crop_s2_convention"
#: a dataset root's contract file (``h2crop synth`` writes one; datasets without one are not checked)
CONTRACT_FILE = "input_contract.json"
#: how far two contracts' centre wavelengths may differ and still name the same band: EnMAP's centres vary
#: by up to ~1 nm from product to product, while neighbouring bands lie 6-12 nm apart
WAVELENGTH_TOLERANCE_NM = 1.5

# a band name as written in band descriptions: B02, b8a, B11, optionally inside a longer name
# (T31UDQ_20230615T105031_B02_10m, month01_B02); "band03" or "month01_band03" are not names
_BAND_TOKEN = re.compile(r"b0?([1-9]|1[0-2])(a?)", re.IGNORECASE)
#: Earth Search's asset keys (a stackstac or odc-stac export names bands by them)
_COMMON_NAMES = {
    "coastal": "B1",
    "blue": "B2",
    "green": "B3",
    "red": "B4",
    "rededge1": "B5",
    "rededge2": "B6",
    "rededge3": "B7",
    "nir": "B8",
    "nir08": "B8A",
    "nir09": "B9",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}


class ContractError(H2CropError):
    """An input contract that is malformed, or two contracts that disagree (the message names what)."""


@dataclass(frozen=True)
class InputContract:
    """What a model's input numbers are.

    Attributes:
        s2_bands: S2 band names in the model's order (empty: unnamed, read by index).
        s2_convention: how S2 reflectance is stored; ``l2a-offset-1000``: stored value = 10000 × reflectance
            + 1000, the L2A encoding since processing baseline 04.00 (25 Jan 2022), what ``h2crop synth``
            writes and ``h2crop composite`` harmonises every scene to.
        enmap_wavelengths_nm: the centre wavelength (nm) of each EnMAP band in the model's order (empty: by
            index); an EnMAP product's bands are picked by them.
        enmap_convention: how EnMAP reflectance is stored (``reflectance-x10000``).
        enmap_source: where the wavelengths come from.
    """

    s2_bands: tuple[str, ...] = S2_BANDS
    s2_convention: str = S2_CONVENTION
    enmap_wavelengths_nm: tuple[float, ...] = ()
    enmap_convention: str = ENMAP_CONVENTION
    enmap_source: str = ""

    def to_dict(self) -> dict:
        """Plain lists and strings (JSON-able and ``torch.load(weights_only=True)``-safe)."""
        return {
            "s2_bands": list(self.s2_bands),
            "s2_convention": self.s2_convention,
            "enmap_wavelengths_nm": [float(w) for w in self.enmap_wavelengths_nm],
            "enmap_convention": self.enmap_convention,
            "enmap_source": self.enmap_source,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "input contract") -> InputContract:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ContractError: naming ``source`` and the field that is missing or of the wrong kind.
        """
        try:
            contract = cls(
                s2_bands=tuple(str(b) for b in data["s2_bands"]),
                s2_convention=str(data["s2_convention"]),
                enmap_wavelengths_nm=tuple(float(w) for w in data.get("enmap_wavelengths_nm") or ()),
                enmap_convention=str(data.get("enmap_convention", ENMAP_CONVENTION)),
                enmap_source=str(data.get("enmap_source", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ContractError(
                f"{source}: expected s2_bands (names), s2_convention and enmap_wavelengths_nm (numbers); "
                f"{type(error).__name__}: {error}"
            ) from None
        unnamed = [b for b in contract.s2_bands if normalise_band_name(b) != b]
        if unnamed:
            raise ContractError(f"{source}: s2_bands {unnamed} are not S2 band names such as B2, B8A, B11")
        return contract

    def to_json(self, path: str | Path) -> Path:
        return write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> InputContract:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ContractError(f"{path}: not a readable input contract ({error})") from None
        if not isinstance(data, dict):
            raise ContractError(f"{path}: expected a JSON object; found {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    def differences(self, other: InputContract) -> list[str]:
        """What ``other`` says differently, one phrase per field (empty: they agree). An empty band list or
        wavelength list on either side claims nothing (by index) and agrees with anything."""
        found = []
        if self.s2_bands and other.s2_bands and self.s2_bands != other.s2_bands:
            found.append(f"S2 bands {list(self.s2_bands)} vs {list(other.s2_bands)}")
        if self.s2_convention != other.s2_convention:
            found.append(f"S2 convention {self.s2_convention!r} vs {other.s2_convention!r}")
        if self.enmap_convention != other.enmap_convention:
            found.append(f"EnMAP convention {self.enmap_convention!r} vs {other.enmap_convention!r}")
        ours, theirs = self.enmap_wavelengths_nm, other.enmap_wavelengths_nm
        if ours and theirs:
            if len(ours) != len(theirs):
                found.append(f"{len(ours)} vs {len(theirs)} EnMAP band wavelengths")
            else:
                apart = [
                    (i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if abs(a - b) > WAVELENGTH_TOLERANCE_NM
                ]
                if apart:
                    i, a, b = apart[0]
                    found.append(
                        f"EnMAP band wavelengths at {len(apart)} band(s), the first band {i + 1}: {a:g} vs {b:g} nm"
                    )
        return found


def contract_for(spec: SampleSpec) -> InputContract:
    """The contract of a dataset of layout ``spec`` that says nothing more: the benchmark's for its layout
    (10 S2 bands in the model's order, 218 EnMAP bands at the nominal L2A centres); other band counts are
    unnamed (read by index)."""
    named = spec.s2_bands == len(S2_BANDS)
    benchmark_enmap = spec.enmap_bands == len(BENCHMARK_ENMAP_NM)
    return InputContract(
        s2_bands=S2_BANDS if named else (),
        enmap_wavelengths_nm=BENCHMARK_ENMAP_NM if benchmark_enmap else (),
        enmap_source=BENCHMARK_ENMAP_SOURCE if benchmark_enmap else "",
    )


def read_dataset_contract(root: str | Path) -> InputContract | None:
    """A dataset root's ``input_contract.json``, or None if it has none."""
    path = Path(root) / CONTRACT_FILE
    return InputContract.from_json(path) if path.is_file() else None


def check_dataset_contract(root: str | Path, contract: InputContract | None, checkpoint: str | Path) -> None:
    """Refuse a dataset whose ``input_contract.json`` differs from the checkpoint's contract (a dataset
    without one, or a checkpoint written before contracts, passes).

    Raises:
        ContractError: one line naming both files and every difference.
    """
    found = read_dataset_contract(root)
    if found is None or contract is None:
        return
    differences = contract.differences(found)
    if differences:
        raise ContractError(
            f"{Path(root) / CONTRACT_FILE}: the dataset's inputs are not what {checkpoint} was trained on "
            f"(checkpoint vs dataset): {'; '.join(differences)}"
        )


def normalise_band_name(text: str | None) -> str | None:
    """The S2 band a band description names (``B02`` -> ``B2``, ``b8a`` -> ``B8A``, ``nir08`` -> ``B8A``,
    ``T31UDQ_20230615T105031_B02_10m`` -> ``B2``), or None for an unnamed band (empty, or a generic
    description such as ``month01_band03``)."""
    if not text:
        return None
    tokens = [t for t in re.split(r"[^0-9A-Za-z]+", text.strip()) if t]
    names = {_COMMON_NAMES[t.lower()] for t in tokens if t.lower() in _COMMON_NAMES}
    for token in tokens:
        match = _BAND_TOKEN.fullmatch(token)
        if match and (match.group(2) == "" or match.group(1) == "8"):
            names.add(f"B{match.group(1)}{match.group(2).upper()}")
    return names.pop() if len(names) == 1 else None


def s2_band_names(path: str | Path) -> tuple[str | None, ...]:
    """The S2 band each band of a GeoTIFF names in its description (None where unnamed)."""
    import rasterio  # here, not at the top: loading a checkpoint (which imports this module) needs no GDAL

    with rasterio.open(path) as handle:
        return tuple(normalise_band_name(d) for d in handle.descriptions)


def s2_convention_tag(path: str | Path) -> str | None:
    """The reflectance convention a raster is tagged with (``h2crop_s2_convention``), if any."""
    import rasterio

    with rasterio.open(path) as handle:
        return handle.tags().get(S2_CONVENTION_TAG)


def check_s2_inputs(paths: tuple[str, ...] | list[str], contract: InputContract) -> None:
    """Refuse S2 rasters that contradict the contract: bands *named* (in their descriptions) otherwise or in
    another order, or a convention tag other than the contract's. Unnamed bands pass (read by index); a
    stacked file (months × bands) is compared month by month.

    Raises:
        RegionError: one line naming the file and both lists (or both conventions).
    """
    for path in paths:
        tag = s2_convention_tag(path)
        if tag is not None and tag != contract.s2_convention:
            raise RegionError(
                f"{path}: tagged {S2_CONVENTION_TAG}={tag!r} ({CONVENTIONS.get(tag, 'unknown convention')}); the "
                f"checkpoint reads {contract.s2_convention!r} ({CONVENTIONS.get(contract.s2_convention, '')}): "
                "convert it (h2crop composite harmonises scenes)"
            )
        expected = contract.s2_bands
        if not expected:
            continue
        names = s2_band_names(path)
        for start in range(0, len(names), len(expected)):
            month = names[start : start + len(expected)]
            if any(name is not None and name != want for name, want in zip(month, expected)):
                found = [name or "?" for name in month]
                where = f" (bands {start + 1}-{start + len(month)})" if len(names) > len(expected) else ""
                raise RegionError(
                    f"{path}: its bands are named {found}{where}; the checkpoint reads S2 bands "
                    f"{list(expected)} in that order: write them in that order (h2crop composite does)"
                )
