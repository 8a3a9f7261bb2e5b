"""The paper's two questions, recomputed on a user's own sweep: ``h2crop runs gain`` and ``runs early-season``.

* **Hyperspectral gain**: for every window (with and without last year's crop), per-level mF1 of a run with
  the EnMAP stream minus that of the run without it that trained the same settings with the same seed
  (the benchmark paper: +4.2 F1 points on average, +6.3 at best).
* **Early season**: per-level and per-class F1 against the months of data a window holds, and per class
  the earliest window whose F1 reaches a target (default 0.8 of the class's best).

Both read finished runs only (a trial stopped early did not train as long as the others) at their best
epoch on the validation split, as :mod:`pipelines.runs.compare` does.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from h2crop_core.data.schema import window_months
from h2crop_core.errors import SettingError
from h2crop_core.files import write_text_atomic
from pipelines.runs.compare import LEVELS, RunRow, pyplot, records_csv, save_figure, varied_keys

#: space keys that say which inputs and window a run has (they define the comparisons, not the settings)
DESIGN_KEYS = ("preset", "window", "modalities", "seed", "model.window", "model.use_enmap", "model.use_prior")
#: settings that only exist with the EnMAP stream
ENMAP_ONLY_PREFIXES = ("model.enmap_", "model.spatial_", "model.spectral_", "model.fusion")


@dataclass(frozen=True)
class Design:
    """What a run is, for pairing: window, inputs, seed, and its other varied settings."""

    window: str
    months: int
    enmap: bool
    prior: bool
    seed: str
    others: tuple  #: (key, value) of the varied settings the S2 stream also has
    enmap_settings: tuple  #: (key, value) of the varied EnMAP-only settings

    @property
    def modalities(self) -> str:
        return "S2" + ("+H" if self.enmap else "") + ("+P" if self.prior else "")


def designs(rows: list[RunRow]) -> list[tuple[RunRow, Design]]:
    """The finished runs with their design (a run whose params lack the window or inputs is left out)."""
    keys = [k for k in varied_keys(rows) if k not in DESIGN_KEYS]
    out = []
    for row in rows:
        if row.status != "FINISHED" or not row.values or "model.window" not in row.params:
            continue
        window = row.params["model.window"]
        items = [(k, row.config.get(k, "")) for k in keys]
        out.append(
            (
                row,
                Design(
                    window,
                    window_months(window),
                    row.params.get("model.use_enmap") == "True",
                    row.params.get("model.use_prior") == "True",
                    row.seed,
                    tuple(i for i in items if not i[0].startswith(ENMAP_ONLY_PREFIXES)),
                    tuple(i for i in items if i[0].startswith(ENMAP_ONLY_PREFIXES)),
                ),
            )
        )
    return out


def _mean(values) -> float:
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else math.nan


def _label(items: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in items)


# ------------------------------------------------------------------------------------------- gain
def gain_records(rows: list[RunRow]) -> list[dict]:
    """Per window x prior (x EnMAP-only settings): per-level mF1 with and without EnMAP and the gain, the
    mean of the pairs made by setting and seed."""
    runs = designs(rows)
    without: dict[tuple, list[RunRow]] = {}
    for row, d in runs:
        if not d.enmap:
            without.setdefault((d.window, d.prior, d.seed, d.others), []).append(row)
    groups: dict[tuple, list[tuple[RunRow, list[RunRow]]]] = {}
    for row, d in runs:
        partners = without.get((d.window, d.prior, d.seed, d.others)) if d.enmap else None
        if partners:
            groups.setdefault((d.months, d.window, d.prior, d.others, d.enmap_settings), []).append((row, partners))
    records = []
    for (months, window, prior, others, enmap_settings), pairs in sorted(
        groups.items(), key=lambda item: (item[0][0], item[0][2], str(item[0][3:]))
    ):
        record = {
            "window": window,
            "months": months,
            "prior": prior,
            "settings": _label(others + enmap_settings),
            "pairs": len(pairs),
        }
        for level in LEVELS:
            with_h = [row.level(level) for row, _ in pairs]
            without_h = [_mean(p.level(level) for p in partners) for _, partners in pairs]
            record[f"{level}_with"], record[f"{level}_without"] = _mean(with_h), _mean(without_h)
            record[f"{level}_gain"] = _mean(a - b for a, b in zip(with_h, without_h))
        record["mean_gain"] = _mean(record[f"{lv}_gain"] for lv in LEVELS)
        records.append(record)
    if not records:
        raise SettingError(
            "no pair of finished runs with and without EnMAP (same window, priors, settings and seed): sweep "
            "`modalities` (e.g. tune_spaces/temporal_window.yaml)"
        )
    return records


def gain_summary(records: list[dict]) -> dict:
    """Mean gain over every row and level, and the best one, in F1 points."""
    cells = [(r[f"{lv}_gain"], r, lv) for r in records for lv in LEVELS if r[f"{lv}_gain"] == r[f"{lv}_gain"]]
    best = max(cells, key=lambda cell: cell[0])
    return {
        "mean_gain_points": 100 * _mean(c[0] for c in cells),
        "best_gain_points": 100 * best[0],
        "best_at": f"{best[2]}, window {best[1]['window']}{' +P' if best[1]['prior'] else ''}",
        "pairs": sum(r["pairs"] for r in records),
    }


def format_gain(records: list[dict]) -> str:
    header = (
        f"{'window':<8}{'priors':<8}{'pairs':>6}"
        + "".join(f"{lv + ' gain':>13}" for lv in LEVELS)
        + f"{'mean':>9}  settings"
    )
    lines = [header]
    for r in records:
        gains = "".join(f"{100 * r[f'{lv}_gain']:>+13.1f}" for lv in LEVELS)
        lines.append(
            f"{r['window']:<8}{'yes' if r['prior'] else 'no':<8}{r['pairs']:>6}{gains}{100 * r['mean_gain']:>+9.1f}  {r['settings']}"
        )
    summary = gain_summary(records)
    lines.append(
        f"mean gain {summary['mean_gain_points']:+.1f} F1 points, best {summary['best_gain_points']:+.1f} ({summary['best_at']}); "
        f"{summary['pairs']} pairs (the paper: +4.2 on average, +6.3 at best)"
    )
    return "\n".join(lines)


def write_gain(rows: list[RunRow], output: str | Path) -> dict[str, Path]:
    """``gain.csv`` and ``gain.png`` in ``output``; returns them and the records."""
    records = gain_records(rows)
    out = Path(output)
    written = {"csv": write_text_atomic(out / "gain.csv", records_csv(records))}
    written["png"] = _plot_gain(records, out / "gain.png")
    return {"records": records, **written}


def _plot_gain(records: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(records) + 2), 4))
    width = 0.2
    for i, level in enumerate(LEVELS):
        values = [100 * r[f"{level}_gain"] for r in records]
        ax.bar([x + (i - 1.5) * width for x in range(len(records))], values, width, label=level)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(
        range(len(records)),
        [f"{r['window']}{' +P' if r['prior'] else ''}\n{r['settings']}".strip() for r in records],
        fontsize=7,
    )
    ax.set_ylabel("mF1 with EnMAP - without (F1 points)")
    ax.set_title("hyperspectral gain per window (validation, best epoch)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(plt, fig, path)


# ---------------------------------------------------------------------------------- early season
def series_of(design: Design) -> str:
    """What a line of the early-season plot holds fixed: the inputs and the other settings."""
    return " ".join(filter(None, [design.modalities, _label(design.others + design.enmap_settings)]))


def level_records(rows: list[RunRow]) -> list[dict]:
    """Per series, window and level: mF1 (mean ± std over seeds)."""
    cells: dict[tuple, list[float]] = {}
    for row, d in designs(rows):
        for level in LEVELS:
            cells.setdefault((series_of(d), d.months, d.window, level), []).append(row.level(level))
    if len({key[1] for key in cells}) < 2:
        raise SettingError(
            "fewer than two windows among the finished runs: sweep `window` (e.g. tune_spaces/temporal_window.yaml)"
        )
    return [
        {
            "series": s,
            "window": w,
            "months": m,
            "level": lv,
            "mf1": _mean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "n": len(v),
        }
        for (s, m, w, lv), v in sorted(cells.items())
    ]


def class_records(rows: list[RunRow], tracking_uri: str) -> list[dict]:
    """Per series, level, class and window: F1 from each run's best-epoch report (mean over seeds)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    cells: dict[tuple, list[float]] = {}
    names: dict[tuple, str] = {}
    for row, d in designs(rows):
        for level, classes in _per_class(client, row.run_id).items():
            for class_id, name, f1 in classes:
                key = (series_of(d), level, class_id, d.months, d.window)
                cells.setdefault(key, []).append(f1)
                names[key[:3]] = name
    return [
        {
            "series": s,
            "level": lv,
            "class_id": c,
            "class_name": names[(s, lv, c)],
            "window": w,
            "months": m,
            "f1": _mean(v),
            "n": len(v),
        }
        for (s, lv, c, m, w), v in sorted(cells.items())
    ]


def _per_class(client, run_id: str) -> dict[str, list[tuple[int, str, float]]]:
    """Per level, (class id, name, F1) of the classes with labelled pixels, from the run's ``best_report``
    (empty for a run without one: stopped before the end)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file otherwise
    out: dict[str, list[tuple[int, str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for level in LEVELS:
            try:
                path = client.download_artifacts(run_id, f"best_report/per_class_{level}.csv", folder)
            except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                continue
            with open(path, newline="") as handle:
                out[level] = [
                    (int(r["id"]), r["name"], float(r["f1"]) if r["f1"] not in ("", "nan") else math.nan)
                    for r in csv.DictReader(handle)
                    if int(r["support"] or 0) > 0 and int(r["id"]) != 0
                ]
    return out


def earliest_records(classes: list[dict], target: float | None = None) -> list[dict]:
    """Per series, level and class: its best F1, the target (``target``, else 0.8 of the best) and the
    earliest window that reaches it."""
    by_class: dict[tuple, list[dict]] = {}
    for record in classes:
        by_class.setdefault((record["series"], record["level"], record["class_id"]), []).append(record)
    out = []
    for (series, level, class_id), records in sorted(by_class.items()):
        scored = sorted((r for r in records if r["f1"] == r["f1"]), key=lambda r: r["months"])
        if not scored:
            continue
        best = max(scored, key=lambda r: r["f1"])
        goal = target if target is not None else 0.8 * best["f1"]
        # a class never recognised (F1 0 in every window) reaches no target, however low
        first = next((r for r in scored if r["f1"] >= goal and r["f1"] > 0), None)
        out.append(
            {
                "series": series,
                "level": level,
                "class_id": class_id,
                "class_name": records[0]["class_name"],
                "best_f1": best["f1"],
                "best_window": best["window"],
                "target_f1": goal,
                "earliest_window": first["window"] if first else "",
                "earliest_months": first["months"] if first else "",
            }
        )
    return out


def write_early_season(rows: list[RunRow], tracking_uri: str, output: str | Path, target: float | None = None) -> dict:
    """CSVs (levels, classes, earliest window per class) and PNGs (levels, level-4 classes) in ``output``."""
    out = Path(output)
    levels = level_records(rows)
    classes = class_records(rows, tracking_uri)
    earliest = earliest_records(classes, target)
    written = {
        "levels_csv": write_text_atomic(out / "early_season_levels.csv", records_csv(levels)),
        "classes_csv": write_text_atomic(out / "early_season_classes.csv", records_csv(classes)),
        "earliest_csv": write_text_atomic(out / "earliest_window.csv", records_csv(earliest)),
        "levels_png": _plot_levels(levels, out / "early_season.png"),
    }
    if classes:
        written["classes_png"] = _plot_classes(classes, out / "early_season_classes.png")
    return {"levels": levels, "classes": classes, "earliest": earliest, **written}


def _plot_levels(levels: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(3.2 * len(LEVELS), 3.4), sharey=True)
    for ax, level in zip(axes, LEVELS):
        for series in dict.fromkeys(r["series"] for r in levels):
            points = [r for r in levels if r["series"] == series and r["level"] == level]
            ax.errorbar(
                [r["months"] for r in points],
                [r["mf1"] for r in points],
                yerr=[r["std"] for r in points],
                marker="o",
                capsize=3,
                label=series,
            )
        ax.set_title(level, fontsize=9)
        ax.set_xlabel("months of S2 data")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("validation mF1")
    axes[-1].legend(fontsize=7)
    fig.suptitle("how early each level can be mapped", fontsize=10)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def _plot_classes(classes: list[dict], path: Path, top: int = 30) -> Path:
    """Level-4 F1 per class (rows: the ``top`` classes by their best F1) and window (columns), for the
    series with the highest mean F1."""
    import numpy as np

    plt = pyplot()
    level = "level4" if any(r["level"] == "level4" for r in classes) else classes[0]["level"]
    chosen = [r for r in classes if r["level"] == level]
    series = max(
        dict.fromkeys(r["series"] for r in chosen), key=lambda s: _mean(r["f1"] for r in chosen if r["series"] == s)
    )
    chosen = [r for r in chosen if r["series"] == series]
    months = sorted({r["months"] for r in chosen})
    best = {}
    for r in chosen:
        best[r["class_id"]] = max(best.get(r["class_id"], -1.0), r["f1"] if r["f1"] == r["f1"] else -1.0)
    ids = sorted(best, key=lambda c: (-best[c], c))[:top]
    grid = np.full((len(ids), len(months)), np.nan)
    for r in chosen:
        if r["class_id"] in ids:
            grid[ids.index(r["class_id"]), months.index(r["months"])] = r["f1"]
    name = {r["class_id"]: r["class_name"] for r in chosen}
    fig, ax = plt.subplots(figsize=(2 + 0.8 * len(months), 1.5 + 0.25 * len(ids)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(months)), [str(m) for m in months])
    ax.set_yticks(range(len(ids)), [name[i][:28] for i in ids], fontsize=6)
    ax.set_xlabel("months of S2 data")
    ax.set_title(f"{level} F1 per class, {series}", fontsize=9)
    fig.colorbar(image, ax=ax, label="F1")
    fig.tight_layout()
    return save_figure(plt, fig, path)
