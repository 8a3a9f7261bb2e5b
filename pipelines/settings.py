"""The settings of training, evaluation and mapping: the one place every default lives.

Each field carries its help text (and allowed values) as metadata; ``h2crop train|evaluate|map`` build their
options from these dataclasses (:mod:`pipelines.cli.options`), so a default is written once, here. Values are
checked when a settings object is made: a bad one is a :class:`~h2crop_core.errors.SettingError` naming the
setting.

One module: every command's defaults side by side, so that a default is found (and changed) in one place and the
commands read alike; splitting it by command would scatter what the CLI, the docs and MLflow params share.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from h2crop_core.baseline import MODELS, PREDICT_MODES, TARGETS
from h2crop_core.compositing.options import DEFAULT_DROP
from h2crop_core.compositing.options import METHODS as COMPOSITE_METHODS
from h2crop_core.data.schema import WINDOWS
from h2crop_core.errors import SettingError
from h2crop_core.mapping.drift import DEFAULT_DRIFT_SIGMAS
from h2crop_core.mapping.sources import RESAMPLING_CHOICES
from h2crop_core.models.heads import DECODE_CHOICES, DEFAULT_DECODE
from h2crop_core.models.presets import PRECISIONS, ModelConfig
from h2crop_core.recipe import RECIPE_CHOICES

#: how training workers get their arrays: read on the worker from sharded paths, or in Ray Data tasks
INPUT_MODES: tuple[str, ...] = ("paths", "arrays")
#: how an epoch draws training tiles (h2crop_core/data/sampling.py)
SAMPLINGS: tuple[str, ...] = ("auto", "uniform", "labelled")


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple | None = None,
    flags: tuple[str, ...] = (),
    cli: bool = True,
) -> Any:
    """A dataclass field with its command-line help, allowed values and option names (``flags``; default
    ``--field-name``); ``cli=False`` keeps it off the command line."""
    metadata = {"help": help, "choices": choices, "flags": flags, "cli": cli}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_choices(settings: object) -> None:
    """Every field with ``choices`` holds one of them (None allowed where it is the default)."""
    for item in dataclasses.fields(settings):
        allowed, value = item.metadata.get("choices"), getattr(settings, item.name)
        if allowed and value not in allowed and not (value is None and item.default is None):
            raise SettingError(f"{item.name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_positive(settings: object, names: tuple[str, ...], minimum: float = 1) -> None:
    """Each named setting is at least ``minimum`` (None, "the recipe's", passes)."""
    for name in names:
        if getattr(settings, name) is not None and getattr(settings, name) < minimum:
            raise SettingError(f"{name} must be at least {minimum:g}; got {getattr(settings, name)!r}")


DECODE_HELP = (
    "consistent: the most probable taxonomy path (the four levels always agree); argmax: per level (the research "
    "code's); auto: consistent for four-level models, else argmax"
)


@dataclass
class TrainSettings:
    """Everything a training run needs; recorded whole as MLflow params (as resolved: the recipe's values
    filled in). Schedule settings left None take the recipe's (:mod:`h2crop_core.recipe`)."""

    data: str = setting(help="dataset root")
    preset: str = setting(help="model preset, e.g. crops_S2_H_P_jun or tiny_crops_S2_H_P_jun (h2crop model-info --all)")
    overrides: dict = setting({}, "model setting overrides (--set key=value)", cli=False)
    recipe: str = setting(
        "auto",
        "training schedule: benchmark (the paper's: lr 6e-5, 1,000 warm-up steps, cosine over 100 epochs), "
        "small (lr 2e-3, 50 warm-up steps, 1,500 optimizer steps, early stopping), or auto: small below 2,000 "
        "training samples unless --lr is given, else benchmark (default: auto)",
        choices=RECIPE_CHOICES,
    )
    epochs: int | None = setting(
        None,
        "most epochs (default: the recipe's; the small recipe counts optimizer steps, --steps); the run stops "
        "earlier at --time-budget-minutes or --patience",
    )
    steps: int | None = setting(
        None,
        "optimizer steps of the warm-up + cosine schedule (default: the recipe's; benchmark: every step of --epochs epochs)",
    )
    patience: int | None = setting(
        None,
        "stop after this many epochs without a better validation mF1, keeping the best checkpoint; 0: never "
        "(default: the recipe's: 12 for small, 20 for auto's benchmark, 0 for --recipe benchmark)",
    )
    sampling: str = setting(
        "auto",
        "how an epoch draws training tiles: uniform (each once, the benchmark's), labelled (in proportion to "
        "their labelled pixels; unlabelled tiles left out), auto: labelled when under half the pixels are labelled (default: auto)",
        choices=SAMPLINGS,
    )
    batch_size: int = setting(4, "samples per worker per step")
    lr: float | None = setting(None, "peak AdamW learning rate (default: the recipe's)")
    weight_decay: float = setting(5e-4, "AdamW weight decay")
    warmup_iters: int | None = setting(
        None, "linear warm-up steps, capped at 10%% of all steps (default: the recipe's)"
    )
    warmup_start: float = setting(0.01, "warm-up starts at this fraction of the lr")
    min_lr: float | None = setting(None, "learning rate at the end of the cosine decay (default: the recipe's)")
    grad_accum: int = setting(1, "gradient accumulation steps")
    precision: str = setting(
        "bf16",
        "autocast precision unless --set precision= says otherwise (the benchmark trained in mixed precision)",
        choices=PRECISIONS,
    )
    decode: str = setting(
        DEFAULT_DECODE,
        "how validation decodes the levels (it ranks epochs and writes metrics.json), as evaluate and map do: "
        + DECODE_HELP,
        choices=DECODE_CHOICES,
    )
    cutmix_p: float = setting(0.5, "CutMix probability per sample (0 disables)", flags=("--cutmix",))
    flip_rotate: bool = setting(True, "random flips and 90° rotations")
    spectral_jitter: float = setting(
        0.0,
        "spectral augmentation: std of a smooth log-brightness field over each tile (S2 and EnMAP) with S2 "
        "band-level fields, e.g. 0.08; 0: off (default; no gain measured on benchmarks/small_data.py)",
    )
    workers: int = setting(2, "Ray Train workers (one per GPU with --use-gpu)")
    use_gpu: bool = setting(False, "one GPU per worker; bf16 autocast on CUDA")
    cpus_per_worker: float = setting(1.0, "CPUs reserved per training worker")
    loader_workers: int = setting(1, "reader processes per training worker (paths mode)")
    input_mode: str = setting(
        "paths", "shard paths and read on the workers, or read in Ray Data tasks", choices=INPUT_MODES
    )
    seed: int = setting(0, "seed of weights, shuffling and augmentations")
    run_name: str = setting(
        "", "name of the run; re-running with the same name and storage resumes it (default: <preset>-<time>)"
    )
    storage: str = setting(
        "ray_results",
        "Ray Train storage: a folder, or a URI such as s3://bucket/runs (multi-node runs need storage every node reaches)",
    )
    output: str = setting("", "where best.ckpt and the best epoch's metrics.json go (default: runs/<run-name>)")
    tracking_uri: str = setting(
        "", "MLflow tracking URI (default: sqlite:///./mlruns.db; an mlflow server on clusters)"
    )
    experiment: str = setting("h2crop", "MLflow experiment")
    max_failures: int = setting(2, "worker-group restarts from the last checkpoint before giving up (-1: no limit)")
    taxonomy: str = setting("", "taxonomy CSV (default: <data>/cascade_labels.csv)")
    time_budget_minutes: float = setting(
        0.0, "train for at most this long: stop before an epoch that would overrun it (0: no limit)"
    )
    init: str = setting(
        "",
        "start from this h2crop checkpoint's weights: every tensor whose name and shape fit is loaded, the others "
        "(heads for other class counts) keep their fresh initialisation; its input contract must be the data's; "
        "a resumed run keeps its own weights (docs/training.md, Fine-tuning)",
    )
    pretrained_s2: str = setting(
        "", "AgriFM-format weights (S2_patch_emd.*, backbone.*) for the S2 stream's encoder (not with --init)"
    )
    freeze: str | None = setting(
        None,
        "keep a stream's weights and BatchNorm statistics as they start: s2, enmap, or streams (every stream "
        "the preset has) (default: none)",
        choices=("s2", "enmap", "streams"),
    )
    freeze_epochs: int = setting(
        0, "with --freeze: the stream stays frozen this many epochs, then trains with the rest (0: the whole run)"
    )

    def __post_init__(self) -> None:
        from pathlib import Path

        check_choices(self)
        check_positive(self, ("epochs", "steps", "batch_size", "grad_accum", "workers"))
        check_positive(self, ("loader_workers", "warmup_iters", "patience", "time_budget_minutes"), minimum=0)
        check_positive(self, ("freeze_epochs",), minimum=0)
        if self.freeze_epochs and not self.freeze:
            raise SettingError(f"freeze_epochs {self.freeze_epochs}: give the stream to freeze (--freeze)")
        if self.init and self.pretrained_s2:
            raise SettingError("init and pretrained_s2: give one (an h2crop checkpoint or AgriFM weights), not both")
        for name in ("init", "pretrained_s2"):  # absolute: Ray workers and Tune trials run in other folders
            if getattr(self, name):
                setattr(self, name, str(Path(getattr(self, name)).expanduser().resolve()))
        check_positive(self, ("max_failures",), minimum=-1)  # -1: restart forever
        if not 0 <= self.spectral_jitter <= 1:
            raise SettingError(f"spectral_jitter is a log-brightness std in [0, 1]; got {self.spectral_jitter!r}")
        if not 0 <= self.cutmix_p <= 1:
            raise SettingError(f"cutmix_p is a probability in [0, 1]; got {self.cutmix_p!r}")
        if (self.lr is not None and self.lr <= 0) or (self.min_lr is not None and self.min_lr < 0):
            raise SettingError(
                f"lr must be positive and min_lr non-negative; got lr {self.lr!r}, min_lr {self.min_lr!r}"
            )

    @property
    def time_budget_s(self) -> float:
        return self.time_budget_minutes * 60

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EvaluateSettings:
    """How ``h2crop evaluate`` runs a checkpoint over a split (the checkpoint and data are its inputs)."""

    split: str = setting("test", "the split to evaluate", choices=("train", "val", "test"))
    decode: str = setting(DEFAULT_DECODE, DECODE_HELP, choices=DECODE_CHOICES)
    batch_size: int = setting(4, "samples per forward pass")
    precision: str | None = setting(None, "override the checkpoint's precision", choices=PRECISIONS)
    loader_workers: int = setting(1, "reader processes")
    use_gpu: bool = setting(False, "run on the GPU")
    ignore_background: bool = setting(False, "leave class 0 out of the means and OA (stricter)")
    mmseg_f1: bool = setting(
        False,
        "reproduce the research code's F1 exactly: classes present but never correctly predicted are skipped (inflates mF1)",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, ("batch_size",))
        check_positive(self, ("loader_workers",), minimum=0)


@dataclass
class BaselineSettings:
    """How ``h2crop baseline`` fits a per-pixel classical model (h2crop_core/baseline.py)."""

    model: str = setting(
        "rf",
        "rf: Random Forest (200 trees), hgb: histogram gradient boosting, svm: RBF SVM on standardised features",
        choices=MODELS,
    )
    max_pixels: int | None = setting(
        None,
        "most training pixels, a stratified sample of the train split's labelled pixels (bounds memory and fit "
        "time; default: 200,000, 20,000 for svm)",
    )
    window: str = setting(
        "dec",
        "S2 months per pixel: jun (6), aug (8), oct (10) or dec (12, every month); use the deep preset's to compare like with like",
        choices=tuple(WINDOWS),
    )
    target: str = setting(
        "levels",
        "levels: one model per level; leaf: one level-4 model, levels 1-3 from its taxonomy path (the levels always agree)",
        choices=TARGETS,
    )
    predict: str = setting(
        "scored",
        "which val/test pixels are classified: scored: only those labelled at some level, the only ones the metrics "
        "read (fast; the others hold 0 in predictions/); all: every pixel, in batches, for full prediction maps "
        "(same per-level metrics; slower: an SVM's time grows with the pixels)",
        choices=PREDICT_MODES,
    )
    threads: int = setting(-1, "CPU threads for the Random Forest (-1: every core)")
    seed: int = setting(0, "seed of the pixel sample and the model")
    run_name: str = setting("", "MLflow run name (default: baseline-<model>-<time>)")
    tracking_uri: str = setting("", "MLflow tracking URI (default: sqlite:///./mlruns.db)")
    experiment: str = setting(
        "h2crop", "MLflow experiment (the deep runs' to compare with them in `h2crop runs compare`)"
    )
    taxonomy: str = setting("", "taxonomy CSV (default: <data>/cascade_labels.csv)")

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, ("max_pixels",), minimum=10)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MapSettings:
    """How to map (the model comes from the checkpoint, the rasters from --s2/--enmap/--prior or --region)."""

    tile: int = setting(192, "model tile side in S2 pixels, a multiple of 96 (the benchmark's tiles are 192)")
    overlap: int = setting(
        32, "S2 pixels neighbouring tiles share; each keeps its half (edge predictions see less context)"
    )
    enmap_resampling: str = setting(
        "average",
        "how EnMAP is warped onto the S2 grid (coarsened by 3) where it is in another CRS or grid",
        choices=RESAMPLING_CHOICES,
    )
    batch_size: int = setting(2, "tiles per forward pass")
    actors: int = setting(1, "model replicas working in parallel (Ray actors)")
    cpus_per_actor: float | None = setting(
        None,
        "CPUs (and torch threads, at most the node's cores) per actor (default: the Ray cluster's CPUs shared "
        "among the actors, at most the largest node's)",
    )
    use_gpu: bool = setting(False, "one GPU per actor")
    decode: str = setting(DEFAULT_DECODE, DECODE_HELP, choices=DECODE_CHOICES)
    precision: str | None = setting(None, "override the checkpoint's precision", choices=PRECISIONS)
    overwrite: bool = setting(
        False,
        "start over: delete what an earlier h2crop map wrote into the output folder (its tiles and maps; nothing else)",
    )
    staging: str = setting(
        "",
        "with an object-store --output (s3://...): the local folder the maps are assembled in (default: ~/.cache/h2crop/maps/<hash of the URI>)",
    )
    drift_sigmas: float = setting(  # measured on generated data: see h2crop_core/mapping/drift.py
        DEFAULT_DRIFT_SIGMAS,
        "warn (and go on) when a few tiles' S2 or EnMAP band means sit this many of the checkpoint's stds off "
        "its means, on average over the bands (an unharmonised L2A offset, a 0-1 scale); 0: no check",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, ("batch_size", "actors"))
        check_positive(self, ("overlap", "drift_sigmas"), minimum=0)
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise SettingError(f"cpus_per_actor must be positive; got {self.cpus_per_actor!r}")


def parse_int_list(text: str, name: str, low: int, high: int) -> tuple[int, ...]:
    """``"1-6,9"`` -> (1, 2, 3, 4, 5, 6, 9): integers and inclusive ranges within [low, high], sorted, once each."""
    values: set[int] = set()
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        first, _, last = part.partition("-")
        try:
            start, stop = int(first), int(last or first)
        except ValueError:
            raise SettingError(f"{name}: {part!r} in {text!r} is not a number or a range such as 1-12") from None
        if not low <= start <= stop <= high:
            raise SettingError(f"{name}: {part!r} is outside {low}-{high} or not increasing")
        values.update(range(start, stop + 1))
    if not values:
        raise SettingError(f"{name}: empty; give numbers or ranges such as {low}-{high}")
    return tuple(sorted(values))


@dataclass
class CompositeSettings:
    """How ``h2crop composite`` makes monthly composites (the scenes, year, grid and output are its arguments)."""

    months: str = setting("1-12", "months to composite, e.g. 1-12 or 4-9 (each is one output file)")
    method: str = setting(
        "median",
        "median: per band, the median of the clear observations; mean; least-cloudy: each pixel from the clear "
        "scene with the least cloud over its block (one date per pixel)",
        choices=COMPOSITE_METHODS,
    )
    drop: str = setting(
        ",".join(map(str, DEFAULT_DROP)),
        "Sentinel-2 SCL classes that are not clear (default as sits: no data, defective, dark area, cloud shadow, "
        "medium and high probability cloud, thin cirrus)",
    )
    dilate: int = setting(
        1,
        "also drop pixels within this many pixels of a dropped class (cloud edges, loose in SCL and mixed in by bilinear reads); 0: none",
    )
    block: int = setting(
        1024,
        "block side in pixels: the unit of work, of resuming and of each actor's memory (1024: a JPEG 2000 "
        "band's tiles decoded once per block; docs/benchmarks.md)",
    )
    actors: int | None = setting(None, "parallel readers (Ray actors; default: the cluster's CPUs, at most the blocks)")
    resolution: float = setting(10.0, "pixel size in CRS units with --bounds")
    collection: str = setting("", "the STAC collection, when --scenes is a STAC API URL (e.g. sentinel-2-l2a)")
    overwrite: bool = setting(
        False, "start over: delete what an earlier h2crop composite wrote into the output folder (nothing else)"
    )

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, ("actors",))
        check_positive(self, ("block",), minimum=16)
        check_positive(self, ("dilate",), minimum=0)
        self.month_list = parse_int_list(self.months, "months", 1, 12)
        self.drop_classes = parse_int_list(self.drop, "drop", 0, 11) if self.drop.strip() else ()
        if self.resolution <= 0:
            raise SettingError(f"resolution must be positive; got {self.resolution!r}")


#: training settings ``h2crop tune`` takes as the base of every trial (the space sets the others)
TUNE_BASE_SETTINGS: tuple[str, ...] = (
    "data",
    "use_gpu",
    "cpus_per_worker",
    "loader_workers",
    "input_mode",
    "seed",
    "storage",
    "tracking_uri",
    "experiment",
    "max_failures",
    "taxonomy",
    "time_budget_minutes",
)


@dataclass
class TuneSettings:
    """How ``h2crop tune`` runs a sweep (what each trial trains comes from the space file)."""

    space: str = setting(help="search-space file, e.g. tune_spaces/quick.yaml")
    trials: int = setting(
        0,
        "trials: draws of a random search, or a multiple of the grid (each repeat another seed) (default: the space's samples)",
    )
    max_epochs: int = setting(
        0, "epochs per trial, the most ASHA lets a trial run (default: the space's max_epochs, else 100)"
    )
    workers_per_trial: int = setting(1, "Ray Train workers per trial")
    concurrent: int = setting(
        2, "trials running side by side (lowered to what the cluster fits; each holds a model and its data)"
    )
    name: str = setting(
        "", "name of the sweep; re-running with the same name and storage resumes it (default: <space>-<time>)"
    )
    output: str = setting("", "where each trial's best checkpoint and the sweep's summary go (default: runs/<name>)")
    repeat_best: int = setting(0, "after the sweep, train the best configuration again with this many other seeds")

    def __post_init__(self) -> None:
        check_positive(self, ("workers_per_trial", "concurrent"))
        check_positive(self, ("trials", "max_epochs", "repeat_best"), minimum=0)


def parse_overrides(pairs: list[str]) -> dict:
    """``["precision=bf16", "fusion=gated", "s2_depths=[2,2,2,2]"]`` -> typed ModelConfig overrides."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SettingError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise SettingError(f"--set {key}: not a model setting; known: {', '.join(sorted(fields))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as bf16
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass
class PrepareSettings:
    """How ``h2crop prepare`` cuts a dataset from a user's rasters and labelled parcels."""

    s2: str = setting(
        help="monthly S2 composites: a folder of one GeoTIFF per month (h2crop composite's) or one stacked GeoTIFF"
    )
    parcels: str = setting(
        help="this year's parcel register (GeoPackage, Shapefile, GeoParquet ...) with a crop code per parcel"
    )
    code_column: str = setting(
        help="the register's crop code column: HCAT3 codes (EuroCrops' EC_hcat_c) or national ones with --crosswalk"
    )
    output: str = setting(help="the dataset root to write (h5_data/, data_lists/, prepare.json)")
    taxonomy: str = setting(
        help="the classes: a taxonomy CSV in the benchmark's format (HCAT3_code per level-4 class), or a checkpoint whose taxonomy to use"
    )
    crosswalk: str = setting(
        "", "national code -> HCAT3 code, a CSV in EuroCrops' country-table layout (original_code, HCAT3_code)"
    )
    enmap: str = setting(
        "", "an EnMAP scene (GeoTIFF, any CRS) or EnMAP L2A products (a folder, a zip, a folder of products)"
    )
    enmap_bands: str = setting(
        "", "1-based bands of a plain EnMAP GeoTIFF that has more than the 218, e.g. 1-129,136-224"
    )
    prior: str = setting("", "last year's crop map: a 4-band raster of the taxonomy's ids (any CRS)")
    prior_parcels: str = setting("", "last year's parcel register, labelled through the same taxonomy and crosswalk")
    prior_code_column: str = setting("", "the crop code column of --prior-parcels (default: --code-column)")
    tile: int = setting(192, "sample side in S2 pixels (the benchmark's 192), a multiple of 3")
    block: float = setting(5.76, "side of the spatial blocks assigned whole to a split, in km (rounded to whole tiles)")
    buffer: float = setting(
        0.0,
        "leave out tiles within this many metres of a block of a stricter split (train near val/test, val near "
        "test); 0: blocks only",
    )
    split: tuple = setting((0.7, 0.15, 0.15), "train, val and test fractions of the tiles", cli=False)
    erode: int = setting(
        0, "drop parcel pixels within this many pixels of another parcel or of unparcelled land (mixed pixels)"
    )
    outside: str = setting(
        "unlabelled",
        "pixels outside every parcel: unlabelled (a register lists declared parcels only) or background",
        choices=("unlabelled", "background"),
    )
    min_labelled: float = setting(0.05, "skip tiles with fewer labelled pixels than this share")
    min_valid: float = setting(
        0.5,
        "skip tiles with fewer valid pixels than this share (S2 in at least half the months and, with --enmap, EnMAP)",
    )
    prefix: str = setting("tile", "sample names are <prefix>_x<col>_y<row>")
    seed: int = setting(0, "seed of the block assignment")
    ray: bool = setting(
        True, "cut blocks in Ray tasks (RAY_ADDRESS's cluster or a local Ray); --no-ray: in this process"
    )
    overwrite: bool = setting(False, "delete what an earlier prepare wrote to --output and start over")

    def __post_init__(self) -> None:
        check_choices(self)
        check_positive(self, ("tile",))
        check_positive(self, ("buffer", "erode"), minimum=0)
        for name in ("min_labelled", "min_valid"):
            if not 0 <= getattr(self, name) <= 1:
                raise SettingError(f"{name} is a share in [0, 1]; got {getattr(self, name)!r}")
        if self.prior and self.prior_parcels:
            raise SettingError("give last year's crops as --prior (a raster) or --prior-parcels (a register), not both")
        self.split = tuple(float(f) for f in self.split)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
