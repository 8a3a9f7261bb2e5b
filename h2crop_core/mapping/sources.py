"""What a map is made from: the user's rasters, named once and checked before any work.

A mapping run reads three kinds of raster, each where the user has it:

* ``s2``: Sentinel-2 monthly composites, either one GeoTIFF of months × 10 bands (month-major: band =
  month × 10 + band, January first) or a folder of one 10-band GeoTIFF per month, ordered by the month in
  their names (``S2_2023-01.tif``, ``s2_202302.tif``, ``march.tif`` ...). Its grid is the map's grid.
* ``enmap``: an EnMAP scene in any CRS and grid (warped onto the S2 grid coarsened by 3 when read);
  ``enmap_bands`` picks the model's bands from a scene that has more (L2A ships 224, the benchmark 218).
  Or EnMAP L2A products as delivered: a product folder, its zip, or a folder of several products
  (:mod:`h2crop_core.products.enmap`: bands picked by centre wavelength, flagged pixels masked).
* ``prior``: last year's 4-level crop map, any CRS and grid (warped with nearest neighbour).

A region folder (``region.json``, :mod:`h2crop_core.mapping.region`) is one way of naming them.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.files import cached_digest
from h2crop_core.mapping.region import RegionError, read_manifest
from h2crop_core.products.enmap_metadata import find_products, is_product_path, product_files

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")
#: GDAL resampling methods for warping EnMAP onto the S2 grid
RESAMPLING_CHOICES = ("average", "bilinear", "cubic", "nearest")
_MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_MONTH_NAMES |= {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}[-_.]?(0[1-9]|1[0-2])(?:[-_.]?(?:0[1-9]|[12]\d|3[01]))?(?!\d)")
_WORD = re.compile(r"[a-z]+")
# a lone 1-12 after a separator or an "m" (m03, month_3), never glued to other letters (the "2" of "S2")
_NUMBER = re.compile(r"(?:^|(?<=[-_. m]))(0?[1-9]|1[0-2])(?!\d)")


def month_in_name(path: Path) -> int:
    """The month (1-12) a monthly composite's file name names: a date (``2023-03``, ``202303``,
    ``20230315``), else a month name (``mar``, ``March``), else a lone number 1-12 after a separator or ``m`` (``m03``, ``month_3``).

    Raises:
        RegionError: no month, or more than one candidate, in the name.
    """
    stem = path.stem.lower()
    for found in (
        {int(m.group(1)) for m in _DATE.finditer(stem)},
        {_MONTH_NAMES[w] for w in _WORD.findall(stem) if w in _MONTH_NAMES},
        {int(m.group(1)) for m in _NUMBER.finditer(stem)},
    ):
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            raise RegionError(
                f"{path}: the name holds more than one month ({sorted(found)}); name monthly files by one month, e.g. S2_2023-03.tif"
            )
    raise RegionError(
        f"{path}: no month in the name; name monthly files by their month, e.g. S2_2023-03.tif or s2_mar.tif"
    )


def monthly_files(folder: Path) -> tuple[tuple[Path, ...], tuple[int, ...]]:
    """The rasters of a folder of monthly S2 composites, ordered by month, and their months."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise RegionError(f"{folder}: no GeoTIFFs (*.tif); --s2 takes one stacked GeoTIFF or a folder of monthly ones")
    months: dict[int, Path] = {}
    for path in files:
        month = month_in_name(path)
        if month in months:
            raise RegionError(f"{path}: month {month} is also {months[month].name}; one file per month")
        months[month] = path
    order = sorted(months)
    return tuple(months[m] for m in order), tuple(order)


def parse_band_list(text: str) -> tuple[int, ...]:
    """1-based band indexes from ``"1-126,131-220"`` (ranges inclusive), in the order given.

    Raises:
        SettingError: not a list of positive integers and ranges, or an index given twice.
    """
    bands: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise SettingError(
                f"enmap_bands: {part!r} in {text!r} is not a band (1-based) or an increasing range such as 1-126"
            )
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        bands.extend(range(first, last + 1))
    repeated = sorted({b for b in bands if bands.count(b) > 1})
    if repeated:
        raise SettingError(f"enmap_bands: bands {repeated[:5]} are listed more than once in {text!r}")
    return tuple(bands)


def _existing(path: str | Path, role: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise RegionError(f"{path}: no such file (the {role} input)")
    return path


@dataclass(frozen=True)
class MapInputs:
    """The rasters of one mapping run, resolved to absolute paths.

    Attributes:
        s2: one stacked GeoTIFF, or the monthly GeoTIFFs in month order.
        s2_months: the month (1-12) of each monthly file; empty for a stacked file.
        enmap, prior: the EnMAP scene (a GeoTIFF, or EnMAP L2A products: a folder, a zip, a folder of
            products) and last year's crop map, if given.
        enmap_bands: 1-based indexes of the EnMAP bands the model reads, in the model's order (empty: all).
    """

    s2: tuple[str, ...]
    s2_months: tuple[int, ...] = ()
    enmap: str | None = None
    prior: str | None = None
    enmap_bands: tuple[int, ...] = field(default=())

    @classmethod
    def from_paths(
        cls, s2: str | Path, enmap: str | Path | None = None, prior: str | Path | None = None, enmap_bands: str = ""
    ) -> MapInputs:
        """Resolve the user's ``--s2``/``--enmap``/``--prior`` (missing files, and an ``--enmap`` folder or
        zip without an EnMAP product, are refused here)."""
        s2_path = _existing(s2, "--s2")
        files, months = monthly_files(s2_path) if s2_path.is_dir() else ((s2_path,), ())
        if enmap and is_product_path(_existing(enmap, "--enmap")):
            find_products(_existing(enmap, "--enmap"))  # a folder or zip without a product: refused now
        return cls(
            s2=tuple(str(p) for p in files),
            s2_months=months,
            enmap=str(_existing(enmap, "--enmap")) if enmap else None,
            prior=str(_existing(prior, "--prior")) if prior else None,
            enmap_bands=parse_band_list(enmap_bands) if enmap_bands else (),
        )

    def to_dict(self) -> dict:
        return {
            "s2": list(self.s2),
            "s2_months": list(self.s2_months),
            "enmap": self.enmap,
            "prior": self.prior,
            "enmap_bands": list(self.enmap_bands),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MapInputs:
        return cls(
            tuple(data["s2"]), tuple(data["s2_months"]), data["enmap"], data["prior"], tuple(data["enmap_bands"])
        )

    def files(self, modalities: tuple[str, ...], months: int = 12) -> dict[str, list[str]]:
        """The files a model with ``modalities`` and a window of ``months`` reads, by role (EnMAP products:
        each product's metadata, spectral image and quality layers, or its zip)."""
        s2 = [p for p, m in zip(self.s2, self.s2_months) if m <= months] if self.s2_months else list(self.s2)
        enmap = [self.enmap] if self.enmap else []
        if self.enmap and "enmap" in modalities and is_product_path(self.enmap):
            enmap = [str(p) for p in product_files(self.enmap)]
        named = {"s2": s2, "enmap": enmap, "prior": [self.prior] if self.prior else []}
        return {role: named[role] for role in ("s2", "enmap", "prior") if role in modalities}

    def identity(self, modalities: tuple[str, ...], months: int = 12, digests: dict | None = None) -> dict:
        """What identifies the inputs' content in a resume record: each file's name, size and SHA-256 (not its
        folder: moved inputs still resume; not its modification time: a rewritten or touched file with the
        same content still resumes), the months read and the EnMAP bands. ``digests`` caches the digests by
        size and modification time (:func:`~h2crop_core.files.cached_digest`), so a resume hashes only the
        files that changed on disk."""
        cache = {} if digests is None else digests
        rasters = {
            role: [
                {"name": Path(p).name, "bytes": Path(p).stat().st_size, "sha256": cached_digest(p, cache)}
                for p in paths
            ]
            for role, paths in self.files(modalities, months).items()
        }
        return {
            "rasters": rasters,
            "s2_months": [m for m in self.s2_months if m <= months],
            "enmap_bands": list(self.enmap_bands),
        }


def inputs_from_region(folder: str | Path) -> MapInputs:
    """The inputs a region folder names (``region.json``: :func:`~h2crop_core.mapping.region.read_manifest`)."""
    folder = Path(folder).expanduser().resolve()
    files = read_manifest(folder)["files"]
    path = lambda role: str(folder / files[role]) if role in files else None  # noqa: E731
    return MapInputs(s2=(path("s2"),), enmap=path("enmap"), prior=path("prior"))
