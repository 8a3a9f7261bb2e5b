"""Search spaces as data: ``tune_spaces/*.yaml`` loaded, checked and turned into the sweep's list of trials.

A space file is one flat mapping. Reserved words say how to search (``search``, ``samples``, ``scheduler``,
``metric``, ``grace_period``, ``reduction_factor``, ``max_epochs``); every other key is something a trial
sets:

* a :class:`~pipelines.settings.TrainSettings` field (``lr``, ``batch_size``, ``cutmix_p``, ...);
* ``model.<field>`` of :class:`~h2crop_core.models.presets.ModelConfig` (``model.fusion``, ...);
* ``preset``, ``window`` and ``modalities``: the benchmark's grid (``window`` and ``modalities`` rewrite a
  ``crops_S2[_H][_P]_<window>`` preset name).

A value is a list (a categorical: every value in a grid search, one drawn per trial in a random search), a
``{min, max, log}`` mapping (a range, drawn per trial) or a single value (the same in every trial). Errors
name the file, the key and what is allowed.

One module: the file's grammar, its checks (each naming the file and key) and the trials it gives are one
concept; split, each half would have to know the other's rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from h2crop_core.data.schema import WINDOWS
from h2crop_core.errors import SettingError
from h2crop_core.models.presets import TINY_PREFIX, ModelConfig, get_preset
from pipelines.settings import TrainSettings

SEARCHES: tuple[str, ...] = ("grid", "random")
SCHEDULERS: tuple[str, ...] = ("asha", "fifo")
#: what a trial reports that a space can optimise (always maximised)
METRICS: tuple[str, ...] = ("val_mf1", "val_miou", "val_oa") + tuple(
    f"val_level{k}_{m}" for k in range(1, 5) for m in ("mf1", "miou", "oa")
)
#: modalities as the benchmark names them -> the preset-name part
MODALITIES: dict[str, str] = {"S2": "S2", "S2+H": "S2_H", "S2+P": "S2_P", "S2+H+P": "S2_H_P"}
BENCHMARK_KEYS: tuple[str, ...] = ("preset", "window", "modalities")
RESERVED: dict[str, Any] = {
    "search": "grid",
    "samples": None,
    "scheduler": "asha",
    "metric": "val_mf1",
    "grace_period": 1,
    "reduction_factor": 2,
    "max_epochs": None,
}
#: training settings a trial cannot set, and who sets them instead
NOT_SWEPT: dict[str, str] = {
    "data": "--data",
    "preset": "the space's preset key",
    "overrides": "model.<field> keys",
    "epochs": "max_epochs / --max-epochs",
    "workers": "--workers-per-trial",
    "use_gpu": "--use-gpu",
    "cpus_per_worker": "--cpus-per-worker",
    "run_name": "the sweep (one per trial)",
    "storage": "--storage",
    "output": "the sweep (one per trial)",
    "tracking_uri": "--tracking-uri",
    "experiment": "--experiment",
    "taxonomy": "--taxonomy",
    "max_failures": "--max-failures",
    "loader_workers": "--loader-workers",
    "input_mode": "--input-mode",
}
#: model fields that come from the data, not from a space
FROM_DATA: tuple[str, ...] = ("name", "num_classes", "s2_bands", "enmap_bands", "enmap_upscale")
DEFAULT_RANDOM_SAMPLES = 8
MAX_CHECKED_COMBINATIONS = 512
_PRESET_PATTERN = re.compile(r"crops_(S2(?:_H)?(?:_P)?)_(jun|aug|oct|dec)")


class SpaceError(SettingError):
    """A search-space file that cannot be used (the message names the file and the key)."""


@dataclass(frozen=True)
class Choice:
    """A categorical: every value in a grid search, one drawn per trial in a random search."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A numeric range drawn per trial (log-uniform with ``log``; integers for integer settings)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Fixed:
    """The same value in every trial."""

    value: Any


Param = Choice | Range | Fixed


@dataclass(frozen=True)
class SearchSpace:
    """A checked space file."""

    path: str
    params: dict[str, Param]
    search: str = "grid"
    samples: int | None = None
    scheduler: str = "asha"
    metric: str = "val_mf1"
    grace_period: int = 1
    reduction_factor: float = 2
    max_epochs: int | None = None
    digest: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def grid_size(self) -> int:
        """Number of points of the categorical grid (1 in a random search)."""
        if self.search != "grid":
            return 1
        return math.prod(len(p.values) for p in self.params.values() if isinstance(p, Choice))

    def trial_count(self, trials: int = 0) -> int:
        """Trials the sweep runs: ``trials`` (or the file's ``samples``) draws in a random search; in a grid
        search the grid times the repeats (``samples``, each repeat another seed)."""
        if self.search == "random":
            return trials or self.samples or DEFAULT_RANDOM_SAMPLES
        if trials and trials % self.grid_size:
            raise SpaceError(
                f"{self.path}: a grid of {self.grid_size} points; --trials must be a multiple of it (each repeat another seed), got {trials}"
            )
        return trials or self.grid_size * (self.samples or 1)

    def trial_configs(self, trials: int = 0, base_seed: int = 0) -> dict[str, dict]:
        """The sweep's own list of trials, keyed ``t00``, ``t01``, ...: every grid point (times the repeats,
        each repeat another seed from ``base_seed`` on) or ``trials`` random draws. Ranges are drawn from a
        generator seeded with ``base_seed``, so the same space, count and seed give the same list: a resumed
        sweep knows which trials exist without asking Tune's search state."""
        import numpy as np

        count, rng = self.trial_count(trials), np.random.default_rng(base_seed)
        if self.search == "grid":
            grid = [
                dict(zip(self._choice_keys(), combo))
                for combo in itertools.product(*(self.params[k].values for k in self._choice_keys()))
            ]
            repeats = count // self.grid_size
            points = [
                {**point, **({"seed": base_seed + r} if repeats > 1 else {})} for r in range(repeats) for point in grid
            ]
        else:
            points = [{k: _draw_choice(self.params[k], rng) for k in self._choice_keys()} for _ in range(count)]
        width = max(2, len(str(count - 1)))
        configs = {}
        for index, point in enumerate(points):
            config = {}
            for key, param in self.params.items():
                config[key] = (
                    param.value
                    if isinstance(param, Fixed)
                    else point[key]
                    if isinstance(param, Choice)
                    else _draw_range(param, rng)
                )
            configs[f"t{index:0{width}d}"] = {**config, **({"seed": point["seed"]} if "seed" in point else {})}
        return configs

    def _choice_keys(self) -> list[str]:
        return [k for k, p in self.params.items() if isinstance(p, Choice)]

    def combinations(self) -> list[dict]:
        """Every combination of the categorical and fixed values (for checking; ranges left out)."""
        keys = [k for k, p in self.params.items() if not isinstance(p, Range)]
        values = [p.values if isinstance(p, Choice) else (p.value,) for p in (self.params[k] for k in keys)]
        return [
            dict(zip(keys, combo)) for combo in itertools.islice(itertools.product(*values), MAX_CHECKED_COMBINATIONS)
        ]


def _draw_choice(param: Choice, rng) -> Any:
    return param.values[int(rng.integers(len(param.values)))]


def _draw_range(param: Range, rng) -> float | int:
    """One draw of a range: uniform, or log-uniform with ``log``; integers include both ends."""
    high = (
        param.high + 1 if param.integer else param.high
    )  # an integer range [low, high] is [low, high + 1) before flooring
    if param.log:
        value = math.exp(rng.uniform(math.log(param.low), math.log(high)))
    else:
        value = rng.uniform(param.low, high)
    return min(int(math.floor(value)), int(param.high)) if param.integer else float(value)


# ------------------------------------------------------------------------------------------- loading
def load_space(path: str | Path) -> SearchSpace:
    """Read and check a space file; every problem is a :class:`SpaceError` naming the file and key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file (the shipped ones are in tune_spaces/)")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{path}: expected a mapping of keys to values or lists (see tune_spaces/quick.yaml)")
    reserved = {key: _reserved(path, key, data.pop(key)) for key in list(data) if key in RESERVED}
    params = {str(key): _param(path, str(key), value) for key, value in data.items()}
    if "preset" not in params:
        raise SpaceError(
            f"{path}: no preset key: name the model, e.g. `preset: tiny_crops_S2_H_P_jun`, or list several"
        )
    space = SearchSpace(str(path), params, **reserved, digest=hashlib.sha256(text.encode()).hexdigest()[:16])
    if space.search == "grid" and (space.samples or 1) > 1 and "seed" in params:
        raise SpaceError(
            f"{path}: seed: a grid with samples: {space.samples} repeats each point with other seeds already; list the seeds or set samples, not both"
        )
    if space.max_epochs:
        check_epochs(space, space.max_epochs)
    if space.search == "grid" and space.grid_size > 10_000:
        raise SpaceError(f"{path}: the grid has {space.grid_size} points; use `search: random` with `samples:`")
    for combination in space.combinations():
        trial_settings(TrainSettings(data="", preset=""), combination, source=str(path))
    return space


def check_epochs(space: SearchSpace, epochs: int) -> None:
    """ASHA's first rung must come before the last epoch."""
    if space.scheduler == "asha" and space.grace_period > epochs:
        raise SpaceError(
            f"{space.path}: grace_period: {space.grace_period} epochs before ASHA's first decision, but trials run {epochs} "
            "(max_epochs or --max-epochs): lower grace_period or raise the epochs"
        )


def _reserved(path: Path, key: str, value: Any) -> Any:
    allowed = {"search": SEARCHES, "scheduler": SCHEDULERS, "metric": METRICS}
    if key in allowed:
        if value not in allowed[key]:
            raise SpaceError(f"{path}: {key}: {value!r} is not allowed; use one of {', '.join(allowed[key])}")
        return value
    if key == "reduction_factor":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 1:
            raise SpaceError(f"{path}: reduction_factor: expected a number above 1, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpaceError(f"{path}: {key}: expected a whole number of at least 1, got {value!r}")
    return value


def _param(path: Path, key: str, value: Any) -> Param:
    kind = _kind(path, key)
    if isinstance(value, dict):
        return _range(path, key, value, kind)
    values = tuple(value) if isinstance(value, list) else (value,)
    if not values:
        raise SpaceError(f"{path}: {key}: an empty list; give at least one value")
    checked = tuple(_value(path, key, item, kind) for item in values)
    if len(set(map(repr, checked))) != len(checked):
        raise SpaceError(f"{path}: {key}: a value is listed twice in {list(values)}")
    return Choice(checked) if isinstance(value, list) else Fixed(checked[0])


def _kind(path: Path, key: str) -> type | str:
    """What a key's values must be: a type, ``"tuple"``, or a benchmark word."""
    if key in BENCHMARK_KEYS:
        return key
    if key.startswith("model."):
        name = key.removeprefix("model.")
        fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
        if name in FROM_DATA:
            raise SpaceError(f"{path}: {key}: set from the data and the preset, not by a space")
        if name not in fields:
            raise SpaceError(f"{path}: {key}: the model has no such setting{_suggest(name, fields, 'model.')}")
        if name == "window":
            return "months"  # jun/aug/oct/dec or a number of months: ModelConfig checks it
        default = getattr(ModelConfig(), name)
        return "tuple" if isinstance(default, tuple) or default is None else type(default)
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    if key in NOT_SWEPT:
        raise SpaceError(f"{path}: {key}: not a per-trial setting; set it with {NOT_SWEPT[key]}")
    if key in fields:
        return {"int": int, "float": float, "str": str, "bool": bool}[str(fields[key].type).removesuffix(" | None")]
    known = list(RESERVED) + list(BENCHMARK_KEYS) + [k for k in fields if k not in NOT_SWEPT] + ["model.<field>"]
    raise SpaceError(
        f"{path}: unknown key {key!r}{_suggest(key, [*fields, *RESERVED, *BENCHMARK_KEYS], '', model=True)}; known: {', '.join(known)}"
    )


def _suggest(name: str, known, prefix: str, model: bool = False) -> str:
    candidates = list(known) + ([f"model.{f.name}" for f in dataclasses.fields(ModelConfig)] if model else [])
    close = difflib.get_close_matches(name, candidates, n=1) or difflib.get_close_matches(
        f"model.{name}", candidates, n=1
    )
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _value(path: Path, key: str, value: Any, kind: type | str) -> Any:
    """One value of ``key``, checked against its type and allowed values."""
    value = _as_float(value) if kind is float else value
    if kind == "preset":
        _checked(path, key, lambda: get_preset(str(value)))
    elif kind == "window" and value not in WINDOWS:
        raise SpaceError(
            f"{path}: window: {value!r} is not a benchmark window; use {', '.join(WINDOWS)} (or model.window: <months>)"
        )
    elif kind == "modalities" and value not in MODALITIES:
        raise SpaceError(f"{path}: modalities: {value!r} is not allowed; use {', '.join(MODALITIES)}")
    elif kind == "tuple":
        if not isinstance(value, list):
            raise SpaceError(
                f"{path}: {key}: expected a list per value (a list of lists to sweep several), got {value!r}"
            )
        value = tuple(value)
    elif isinstance(kind, type) and not _is_type(value, kind):
        raise SpaceError(f"{path}: {key}: expected {kind.__name__} values, got {value!r}")
    if key.startswith("model."):
        _checked(path, key, lambda: ModelConfig().replace(**{key.removeprefix("model."): value}))
    elif isinstance(kind, type):
        _checked(path, key, lambda: TrainSettings(data="", preset="", **{key: value}))
    return value


def _as_float(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _checked(path: Path, key: str, build) -> None:
    try:
        build()
    except SettingError as error:
        raise SpaceError(f"{path}: {key}: {error}") from None


def _range(path: Path, key: str, value: dict, kind: type | str) -> Range:
    if kind not in (int, float):
        raise SpaceError(f"{path}: {key}: a {{min, max, log}} range needs a numeric setting; list the values instead")
    extra = sorted(set(value) - {"min", "max", "log"})
    if extra or not {"min", "max"} <= set(value):
        raise SpaceError(f"{path}: {key}: a range is {{min: ..., max: ..., log: true|false}}; got keys {sorted(value)}")
    low, high, log = _as_float(value["min"]), _as_float(value["max"]), value.get("log", False)
    if not (_is_type(low, float) and _is_type(high, float)) or not isinstance(log, bool):
        raise SpaceError(f"{path}: {key}: min and max must be numbers and log true or false; got {value}")
    if kind is int and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(
            f"{path}: {key}: an integer setting's range needs whole-number bounds; got min {low}, max {high}"
        )
    if not low < high:
        raise SpaceError(f"{path}: {key}: min must be below max; got min {low}, max {high}")
    if log and low <= 0:
        raise SpaceError(f"{path}: {key}: a log range needs min above 0; got {low}")
    for bound in (low, high):
        _value(path, key, int(bound) if kind is int else float(bound), kind)
    return Range(float(low), float(high), log, integer=kind is int)


# ------------------------------------------------------------------------------------ a trial's run
def compose_preset(preset: str, window: str | None = None, modalities: str | None = None, source: str = "space") -> str:
    """``tiny_crops_S2_H_jun`` with ``window="aug"`` and ``modalities="S2+P"`` -> ``tiny_crops_S2_P_aug``."""
    if window is None and modalities is None:
        return preset
    base = preset.removeprefix(TINY_PREFIX)
    match = _PRESET_PATTERN.fullmatch(base)
    if not match:
        raise SpaceError(f"{source}: window and modalities rewrite a crops_S2[_H][_P]_<window> preset, not {preset!r}")
    parts = MODALITIES[modalities] if modalities else match[1]
    return f"{preset[: len(preset) - len(base)]}crops_{parts}_{window or match[2]}"


def trial_settings(base: TrainSettings, config: dict, source: str = "space", **fixed: Any) -> TrainSettings:
    """The training settings of one trial: ``base`` with the trial's ``config`` (space keys) and ``fixed``
    values (run name, output) applied."""
    preset = compose_preset(
        str(config.get("preset", base.preset)), config.get("window"), config.get("modalities"), source
    )
    overrides = dict(base.overrides)
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("model."):
            overrides[key.removeprefix("model.")] = tuple(value) if isinstance(value, list) else value
        elif key not in BENCHMARK_KEYS:
            values[key] = value
    try:
        get_preset(preset, **overrides)
    except SettingError as error:
        raise SpaceError(
            f"{source}: the combination {json.dumps(config, default=str)} cannot be built: {error}"
        ) from None
    return replace(base, preset=preset, overrides=overrides, **values, **fixed)


def config_label(config: dict, keys: list[str] | None = None) -> str:
    """``preset=tiny_crops_S2_H_jun model.fusion=gated`` (the keys that vary, when given)."""
    shown = keys if keys is not None else list(config)
    return " ".join(f"{k}={_short(config[k])}" for k in shown if k in config)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
