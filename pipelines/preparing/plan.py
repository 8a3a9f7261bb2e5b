"""What a prepare run reads and decides before any block: every input opened and checked (so bad input fails
in one line before any work), the tile layout, the input contract and the resume record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from h2crop_core.data.schema import H2CROP_SPEC
from h2crop_core.errors import H2CropError
from h2crop_core.mapping.sources import MapInputs
from h2crop_core.preparing.block import Sources
from h2crop_core.preparing.crosswalk import CodeClasses, Crosswalk
from h2crop_core.preparing.cutting import CutOptions
from h2crop_core.preparing.layout import Layout
from h2crop_core.preparing.register import read_register
from h2crop_core.products.contract import InputContract, check_s2_inputs, contract_for, s2_convention_tag
from h2crop_core.taxonomy import Taxonomy
from pipelines.settings import PrepareSettings

PREPARE_FILE = "prepare.json"
#: the per-block records of an unfinished run (and the input digests)
STATE_DIR = ".prepare"


class PrepareError(H2CropError):
    """Inputs or an output folder ``h2crop prepare`` cannot use as asked."""


@dataclass
class PreparePlan:
    """Everything the passes need, and what the report says about the inputs."""

    settings: PrepareSettings
    root: Path
    sources: Sources
    contract: InputContract
    classes: CodeClasses
    prior_classes: CodeClasses | None
    registers: dict
    record: dict


def load_taxonomy_source(path: str) -> Taxonomy:
    """A taxonomy CSV, or the taxonomy embedded in an h2crop checkpoint (``.ckpt``, ``.pt``)."""
    if not path:
        raise PrepareError(
            "--taxonomy is needed: the benchmark's cascade_labels.csv (HCAT3_code per class), your own in its "
            "format, or the checkpoint you will fine-tune (its classes)"
        )
    if Path(path).suffix.lower() in (".ckpt", ".pt", ".pth"):
        from h2crop_core.checkpoint import read_checkpoint

        return Taxonomy.from_csv_text(read_checkpoint(path)["taxonomy_csv"], source=f"{path} (embedded)")
    return Taxonomy.from_csv(path)


def months_read(inputs: MapInputs) -> int:
    """The S2 months a sample gets from the rasters: January to the last month with no gap before it."""
    import rasterio

    if not inputs.s2_months:
        with rasterio.open(inputs.s2[0]) as handle:
            months = handle.count // H2CROP_SPEC.s2_bands
    else:
        months = 0
        while months + 1 in inputs.s2_months:
            months += 1
    if months < 1:
        raise PrepareError(
            f"{Path(inputs.s2[0]).parent}: no January composite; samples hold months from January on "
            f"(found months {list(inputs.s2_months)})"
        )
    return min(months, H2CROP_SPEC.months)


def dataset_contract(inputs: MapInputs) -> InputContract:
    """The prepared dataset's contract: the benchmark's bands, the S2 convention the composites are tagged
    with (untagged: h2crop's), and no EnMAP wavelengths when there is no EnMAP (its zeros claim nothing)."""
    contract = contract_for(H2CROP_SPEC)
    tag = s2_convention_tag(inputs.s2[0])
    if tag:
        contract = replace(contract, s2_convention=tag)
    if not inputs.enmap:
        contract = replace(contract, enmap_wavelengths_nm=(), enmap_source="no EnMAP given: the samples hold zeros")
    check_s2_inputs(inputs.s2, contract)
    return contract


def plan_prepare(settings: PrepareSettings) -> PreparePlan:
    """Open and check every input, lay out the tiles, and build the resume record."""
    import rasterio

    taxonomy = load_taxonomy_source(settings.taxonomy)
    crosswalk = Crosswalk.from_csv(settings.crosswalk) if settings.crosswalk else None
    inputs = MapInputs.from_paths(settings.s2, settings.enmap or None, settings.prior or None, settings.enmap_bands)
    with rasterio.open(inputs.s2[0]) as first:
        crs = first.crs.to_string()
        layout = Layout.create(first.transform, crs, first.height, first.width, settings.tile, settings.block)
    layout = replace(layout, prefix=settings.prefix)
    contract = dataset_contract(inputs)
    parcels, classes, note = read_register(settings.parcels, settings.code_column, crs, taxonomy, crosswalk)
    registers = {"parcels": note}
    prior_parcels = prior_classes = None
    if settings.prior_parcels:
        column = settings.prior_code_column or settings.code_column
        prior_parcels, prior_classes, registers["prior_parcels"] = read_register(
            settings.prior_parcels, column, crs, taxonomy, crosswalk
        )
    options = CutOptions(settings.erode, settings.outside, settings.min_labelled, settings.min_valid)
    sources = Sources(inputs, months_read(inputs), parcels, prior_parcels, taxonomy, layout, options)
    sources.reader().close()  # band counts, grids and overlap checked now, before any block
    root = Path(settings.output).expanduser().resolve()
    record = _record(settings, sources, root, registers, taxonomy)
    return PreparePlan(settings, root, sources, contract, classes, prior_classes, registers, record)


def _record(settings: PrepareSettings, sources: Sources, root: Path, registers: dict, taxonomy: Taxonomy) -> dict:
    """What defines a prepare run: a rerun with other inputs (by content) or settings is refused."""
    from h2crop_core.files import file_digest
    from pipelines.mapping.run import input_identity

    vectors = {role: note["content_sha256"] for role, note in registers.items()}
    if settings.crosswalk:
        vectors["crosswalk"] = file_digest(settings.crosswalk)
    kept = {k: v for k, v in asdict(settings).items() if k not in ("ray", "overwrite", "output")}
    return {
        "rasters": input_identity(sources.inputs, sources.modalities, sources.months, root / STATE_DIR),
        "vectors": vectors,
        "taxonomy": taxonomy.to_csv_text(),
        "settings": {k: v for k, v in kept.items() if k not in ("s2", "enmap", "prior", "parcels", "prior_parcels")},
    }
