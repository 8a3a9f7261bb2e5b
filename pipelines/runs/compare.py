"""Runs read back from the MLflow store, and ``h2crop runs compare``.

Every h2crop run logs the same metrics each epoch (``val_mf1``, ``val_level<k>_mf1``, ...), so any set of
runs (a sweep's trials, plain trainings, baselines) can be put side by side. A run's numbers are those of
its best epoch by validation mF1: the epoch whose checkpoint the run keeps. Runs that repeat one
configuration with other seeds are grouped: mean ± std over n.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from h2crop_core.errors import SettingError
from pipelines.runtime import tracking

LEVELS = ("level1", "level2", "level3", "level4")
#: params that name or place a run rather than describe what it trains
IDENTITY_PARAMS = (
    "settings.run_name",
    "settings.output",
    "settings.storage",
    "settings.tracking_uri",
    "settings.data",
    "settings.experiment",
    "settings.taxonomy",
    "model.name",
    "settings.seed",
)
FORMATS = ("table", "csv", "json", "markdown")


@dataclass
class RunRow:
    """One MLflow run with its best epoch's validation metrics."""

    run_id: str
    name: str
    status: str
    kind: str
    params: dict
    tags: dict
    values: dict = field(default_factory=dict)  #: val_* metrics at the best epoch
    epochs: int = 0
    minutes: float = math.nan
    config: dict = field(default_factory=dict)  #: what the run trains, as comparable strings

    @property
    def seed(self) -> str:
        return str(self.config.get("seed", self.params.get("settings.seed", "")))

    def level(self, name: str) -> float:
        return self.values.get(f"val_{name}_mf1", math.nan)


#: metric names as metrics.json spells them -> the MLflow keys of a run's epochs
METRIC_KEYS: dict[str, str] = {
    **{f"mean.{m}": f"val_{m}" for m in ("mf1", "miou", "oa")},
    **{f"{lv}.{m}": f"val_{lv}_{m}" for lv in LEVELS for m in ("mf1", "miou", "oa")},
}


def metric_key(metric: str) -> str:
    """``mean.mf1`` -> ``val_mf1``, ``level4.oa`` -> ``val_level4_oa`` (the ``val_*`` keys are accepted too)."""
    if metric in METRIC_KEYS.values():
        return metric
    if metric not in METRIC_KEYS:
        raise SettingError(f"--metric {metric}: not a metric h2crop logs; use one of {', '.join(METRIC_KEYS)}")
    return METRIC_KEYS[metric]


def load_runs(
    tracking_uri: str, experiment: str, sweep: str | None = None, extra_metrics: tuple[str, ...] = ()
) -> list[RunRow]:
    """The experiment's runs (a sweep's trials and repeats with ``sweep``), each with its best epoch."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise SettingError(f"--experiment {experiment}: no such MLflow experiment in {tracking_uri} (known: {known})")
    query = f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'" if sweep else ""
    runs = [
        r
        for r in client.search_runs([found.experiment_id], filter_string=query, max_results=5000)
        if r.data.tags.get(tracking.KIND_TAG) != "sweep"
    ]
    if not runs:
        where = f"sweep {sweep}" if sweep else "any run"
        raise SettingError(
            f"--sweep {sweep}: no runs of {where} in experiment {experiment} at {tracking_uri}"
            if sweep
            else f"--experiment {experiment}: no runs in {tracking_uri}"
        )
    rows = [_row(client, run, extra_metrics) for run in runs]
    _attach_configs(rows)
    return rows


def _row(client, run, extra_metrics: tuple[str, ...]) -> RunRow:
    info, data = run.info, run.data
    row = RunRow(
        info.run_id,
        info.run_name or info.run_id[:8],
        info.status,
        data.tags.get(tracking.KIND_TAG, "train"),
        dict(data.params),
        dict(data.tags),
    )
    history = {m.step: m.value for m in client.get_metric_history(info.run_id, "val_mf1") if m.value == m.value}
    row.epochs = len(history)
    end = info.end_time if info.status != "RUNNING" and info.end_time else time.time() * 1000  # a running run: so far
    row.minutes = (end - info.start_time) / 60_000 if info.start_time else math.nan
    if not history:
        return row
    best_step = max(history, key=lambda step: (history[step], -step))
    keys = {"val_mf1", *(f"val_{lv}_mf1" for lv in LEVELS), *extra_metrics}
    for key in keys:
        at_best = [m.value for m in client.get_metric_history(info.run_id, key) if m.step == best_step]
        row.values[key] = at_best[-1] if at_best else math.nan
    row.values["epoch"] = best_step
    return row


def _attach_configs(rows: list[RunRow]) -> None:
    """What each run trains, as strings: a sweep trial's space values when every run has them, else the
    training and model params that differ between the runs."""
    if all(tracking.CONFIG_TAG in row.tags for row in rows):
        for row in rows:
            row.config = {k: _text(v) for k, v in json.loads(row.tags[tracking.CONFIG_TAG]).items()}
            row.config.setdefault("seed", row.params.get("settings.seed", ""))
        return
    for row in rows:
        row.config = {"preset": row.params.get("settings.preset", row.params.get("model.name", ""))}
        row.config.update(
            {
                _column(k): v
                for k, v in row.params.items()
                if k.startswith(("settings.", "model."))
                and k not in IDENTITY_PARAMS
                and not k.startswith("settings.overrides.")
            }
        )
        row.config["seed"] = row.params.get("settings.seed", "")
        row.config.pop("model.window", None)  # the preset names it


#: the comparison's own columns: a training setting of the same name keeps its ``settings.`` prefix
RESULT_COLUMNS = ("name", "status", "n", "epochs", "minutes", *LEVELS)


def _column(param: str) -> str:
    """``settings.lr`` -> ``lr`` (``settings.epochs`` stays: ``epochs`` is what a run did), ``model.x`` as is."""
    name = param.removeprefix("settings.")
    return param if name in RESULT_COLUMNS else name


def _text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def varied_keys(rows: list[RunRow]) -> list[str]:
    """Config keys whose values differ between the runs (the seed apart), in first-seen order."""
    keys = list(dict.fromkeys(k for row in rows for k in row.config if k != "seed"))
    return [k for k in keys if len({row.config.get(k, "") for row in rows}) > 1]


# -------------------------------------------------------------------------------------- comparing
@dataclass
class Group:
    """Runs of one configuration (repeats with other seeds) and their mean ± std."""

    rows: list[RunRow]
    key: tuple

    def mean_std(self, get) -> tuple[float, float]:
        values = [v for v in (get(row) for row in self.rows) if v == v]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_runs(rows: list[RunRow], keys: list[str], metric: str) -> list[Group]:
    """Runs grouped by the values of ``keys`` and their status (a trial stopped early is not averaged with
    finished ones), best mean ``metric`` first (runs without it last)."""
    groups: dict[tuple, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.config.get(k, "") for k in keys) + (row.status,), []).append(row)
    # a sweep's own trial names its group, before the repeats of it
    ordered = [Group(sorted(members, key=lambda r: r.kind == "repeat"), key) for key, members in groups.items()]
    score = lambda g: g.mean_std(lambda r: r.values.get(metric, math.nan))[0]  # noqa: E731
    return sorted(ordered, key=lambda g: (score(g) != score(g), -score(g) if score(g) == score(g) else 0))  # NaN last


def compare_records(rows: list[RunRow], metric: str) -> tuple[list[str], list[dict]]:
    """Column names and one record per configuration: name, status, the varied settings, n, per-level
    mF1, the metric, epochs and minutes (means and stds for repeated configurations)."""
    keys = varied_keys(rows)
    groups = group_runs(rows, keys, metric)
    repeated = any(len(g.rows) > 1 for g in groups)
    columns = ["name", "status", *keys, *(["n"] if repeated else []), *LEVELS, metric, "epochs", "minutes"]
    records = []
    for group in groups:
        first = group.rows[0]
        record = {
            "name": first.name + (f" (+{len(group.rows) - 1})" if len(group.rows) > 1 else ""),
            "status": "/".join(sorted({r.status for r in group.rows})),
            **{k: first.config.get(k, "") for k in keys},
        }
        if repeated:
            record["n"] = len(group.rows)
        for column, get in [
            *((lv, lambda r, lv=lv: r.level(lv)) for lv in LEVELS),
            (metric, lambda r: r.values.get(metric, math.nan)),
        ]:
            record[column], record[f"{column}_std"] = group.mean_std(get)
        record["epochs"] = max(r.epochs for r in group.rows)
        record["minutes"] = group.mean_std(lambda r: r.minutes)[0]
        records.append(record)
    return columns, records


def format_records(columns: list[str], records: list[dict], fmt: str = "table") -> str:
    """The comparison as an aligned table, CSV, JSON or Markdown (stds as their own fields in CSV/JSON)."""
    if fmt == "json":
        return json.dumps([{k: _json_number(v) for k, v in r.items()} for r in records], indent=1)
    if fmt == "csv":
        return records_csv(
            records,
            [
                c
                for col in columns
                for c in ([col, f"{col}_std"] if f"{col}_std" in (records[0] if records else {}) else [col])
            ],
        )
    cells = [[_cell(r, c) for c in columns] for r in records]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells])


def _cell(record: dict, column: str) -> str:
    value = record.get(column, "")
    if column == "minutes":
        return "" if value != value else f"{value:.1f}"
    if isinstance(value, float):
        if value != value:
            return "-"
        std = record.get(f"{column}_std", 0.0)
        return f"{value:.4f} ± {std:.4f}" if record.get("n", 1) > 1 and std == std else f"{value:.4f}"
    return str(value)


def _json_number(value):
    return None if isinstance(value, float) and value != value else value


def records_csv(records: list[dict], fields: list[str] | None = None) -> str:
    """Records as CSV text (``fields``, default the first record's keys); NaN is an empty cell."""
    out = io.StringIO(newline="")
    if records:
        writer = csv.DictWriter(out, fields or list(records[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records)
    return out.getvalue()


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on clusters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically, and close it."""
    from h2crop_core.files import write_figure_atomic

    try:
        return write_figure_atomic(path, fig)
    finally:
        plt.close(fig)


def plot_compare(rows: list[RunRow], by: str, out: str | Path) -> Path:
    """Per-level mF1 (mean ± std over the runs sharing a value) across the values of the setting ``by``."""
    keys = varied_keys(rows)
    if by not in keys:
        raise SettingError(
            f"--by {by}: not a setting that varies between these runs; use one of {', '.join(keys) or '(none vary)'}"
        )
    finished = [row for row in rows if row.status == "FINISHED"]
    label = f"{len(finished)} finished runs" if finished else f"{len(rows)} runs"
    rows = finished or rows  # a trial stopped early trained less: not averaged with the others
    values = sorted({row.config.get(by, "") for row in rows}, key=_sort_key)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(values) + 2), 4))
    for level in LEVELS:
        stats = [
            Group([r for r in rows if r.config.get(by, "") == v], ()).mean_std(lambda r, k=level: r.level(k))
            for v in values
        ]
        ax.errorbar(
            range(len(values)), [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=level
        )
    ax.set_xticks(range(len(values)), values, rotation=20)
    ax.set_xlabel(by)
    ax.set_ylabel("validation mF1 (best epoch)")
    ax.set_ylim(0, 1)
    ax.set_title(f"per-level mF1 across {by} ({label})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(plt, fig, out)


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        from h2crop_core.data.schema import WINDOWS

        return (0, WINDOWS[value], "") if value in WINDOWS else (1, 0.0, value)
