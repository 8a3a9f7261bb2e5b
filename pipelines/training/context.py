"""What a training run reads, resolved once on the driver: the dataset (taxonomy, sample layout, statistics,
split paths), the model configuration for it, and the worker loop's whole configuration. A sweep prepares
the dataset once for all of its trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.normalise import NormStats
from h2crop_core.data.reader import SampleReader, infer_dataset_spec
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.spectral import SpectralJitter
from h2crop_core.data.stats import ensure_norm_stats
from h2crop_core.errors import SettingError
from h2crop_core.models.presets import ModelConfig, get_preset
from h2crop_core.products.contract import InputContract, contract_for, read_dataset_contract
from h2crop_core.products.harmonise import OFFSET, S2_CONVENTION, SCALE
from h2crop_core.recipe import choose_recipe, recipe_model
from h2crop_core.taxonomy import Taxonomy, load_taxonomy
from pipelines.runtime.progress import ProgressSender
from pipelines.settings import TrainSettings


@dataclass(frozen=True)
class DatasetContext:
    """Everything about the dataset a training needs, resolved once on the driver."""

    root: str
    taxonomy: Taxonomy
    spec: SampleSpec
    stats: NormStats
    train_paths: tuple[str, ...]
    val_paths: tuple[str, ...]
    fingerprint: str
    #: the root's ``input_contract.json`` (what its bands are), carried into every checkpoint; None: the
    #: checkpoint gets the one its layout implies (:func:`~h2crop_core.products.contract.contract_for`)
    contract: InputContract | None = None


def prepare_dataset(root: str | Path, taxonomy: str | Path | None = None, *, progress: bool = True) -> DatasetContext:
    """Splits, taxonomy, sample layout, normalisation statistics (computed over the training split if
    the root has none) and the input contract, if the root has one."""
    index = DatasetIndex(Path(root).resolve())
    loaded_taxonomy = load_taxonomy(index.root, taxonomy or None)  # before the statistics: a typo fails fast
    train_paths, val_paths = index.split_paths("train"), index.split_paths("val")
    spec = infer_dataset_spec(train_paths)
    stats = ensure_norm_stats(index, spec, progress=progress)
    return DatasetContext(
        str(index.root),
        loaded_taxonomy,
        spec,
        stats,
        tuple(map(str, train_paths)),
        tuple(map(str, val_paths)),
        index.fingerprint(),
        read_dataset_contract(index.root),
    )


@dataclass(frozen=True)
class LoopConfig:
    """The worker loop's whole configuration (typed, pickled to every worker)."""

    settings: TrainSettings
    model: ModelConfig
    data: DatasetContext
    tracking_uri: str
    git_commit: str
    progress: ProgressSender = field(default_factory=ProgressSender)
    tags: dict = field(default_factory=dict)  #: extra MLflow tags (a sweep's trial: its parent run, its config)
    #: the plan's per-sample, per-level loss weights (None: each tile drawn equally often)
    draw_weights: dict | None = None
    #: what the run starts from (--init, --pretrained-s2) as MLflow params: the report's counts (empty: fresh)
    start_params: dict = field(default_factory=dict)


def model_config_for(
    settings: TrainSettings, taxonomy: Taxonomy, spec: SampleSpec, train_samples: int | None = None
) -> ModelConfig:
    """Preset + the recipe's model settings (for ``train_samples`` training samples; None: none) + overrides,
    with class counts from the taxonomy and band counts from the data; the model is built once on the meta
    device, so overrides it cannot be built with fail here, not in every worker."""
    from h2crop_core.models.summary import build_meta

    added = {}
    if train_samples is not None:
        recipe = choose_recipe(settings.recipe, train_samples, lr_given=settings.lr is not None)[0]
        added = recipe_model(recipe, settings.overrides, init=bool(settings.init))
    overrides = {"precision": settings.precision, **added, **settings.overrides}
    config = get_preset(settings.preset, **overrides)
    config = config.replace(
        num_classes=taxonomy.num_classes,
        s2_bands=spec.s2_bands,
        enmap_bands=spec.enmap_bands,
        enmap_upscale=spec.enmap_factor,
    )
    try:
        build_meta(config)
    except SettingError:
        raise
    except (
        ValueError,
        TypeError,
        RuntimeError,
        IndexError,
        AssertionError,
    ) as error:  # a shape or count that does not fit
        given = " ".join(f"--set {k}={v}" for k, v in settings.overrides.items()) or "no --set"
        raise SettingError(f"preset {settings.preset} with {given} cannot be built for this data: {error}") from error
    return config


def jitter_for(settings: TrainSettings, data: DatasetContext) -> SpectralJitter | None:
    """The run's spectral augmentation for this dataset's statistics and S2 encoding (None when off)."""
    if not settings.spectral_jitter:
        return None
    convention = (data.contract or contract_for(data.spec)).s2_convention
    offset = OFFSET if convention == S2_CONVENTION else 0.0  # the stored value of reflectance 0
    scale = 1.0 if convention == "reflectance" else SCALE
    return SpectralJitter.for_stats(settings.spectral_jitter, data.stats, offset, scale, data.spec.enmap_factor)


def reader_for(config: ModelConfig, data: DatasetContext) -> SampleReader:
    """Training reads the model's inputs and the labels (and priors, for the changed-area metrics)."""
    modalities = tuple(dict.fromkeys(config.input_keys + ("prior", "label")))
    return SampleReader(config.window, modalities, taxonomy=data.taxonomy, stats=data.stats, spec=data.spec)
