"""Evaluation outputs: ``metrics.json``, per-class CSVs, raw confusion matrices and plots."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from h2crop_core.files import write_atomic, write_figure_atomic, write_text_atomic
from h2crop_core.metrics import HierarchicalConfusion
from h2crop_core.taxonomy import Taxonomy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONFUSION_TOP_CLASSES = 20
F1_TOP_CLASSES = 40


def build_metrics(
    confusion: HierarchicalConfusion,
    split: str,
    *,
    ignore_background: bool = False,
    mmseg_f1: bool = False,
    extra: dict | None = None,
) -> dict:
    """The ``metrics.json`` payload (fractions in [0, 1]; NaN becomes null when written)."""
    computed = confusion.compute(ignore_background=ignore_background, mmseg_f1=mmseg_f1)
    levels = computed["all"]["levels"]
    return {
        "split": split,
        "n_samples": confusion.samples,
        "n_pixels": levels[f"level{confusion.levels[0]}"]["n_pixels"],
        "levels": levels,
        "mean": computed["all"]["mean"],
        "changed": computed["changed"],
        "unchanged": computed["unchanged"],
        "consistency": computed["consistency"],
        "settings": {"ignore_background": ignore_background, "mmseg_f1": mmseg_f1, **(extra or {})},
    }


def metric_values(metrics: dict, prefix: str) -> dict[str, float]:
    """The numbers of a ``metrics.json`` payload as flat MLflow keys: ``<prefix>_mf1``, ``<prefix>_miou``,
    ``<prefix>_oa``, ``<prefix>_consistency`` and ``<prefix>_level<k>_{oa,miou,mf1}``."""
    values = {f"{prefix}_{key}": metrics["mean"][key] for key in ("mf1", "miou", "oa")}
    values[f"{prefix}_consistency"] = metrics["consistency"]
    for level, numbers in metrics["levels"].items():
        for key in ("oa", "miou", "mf1"):
            values[f"{prefix}_{level}_{key}"] = numbers[key]
    return values


def write_report(
    metrics: dict, confusion: HierarchicalConfusion, out_dir: str | Path, taxonomy: Taxonomy | None = None
) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_class_level{1..4}.csv``, ``confusion.npz`` and the plots.

    Every file is written atomically (:mod:`h2crop_core.files`): an interrupted run leaves each one absent,
    as it was, or complete, never truncated.

    Returns:
        The written files by role.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["metrics"] = write_text_atomic(out / "metrics.json", json.dumps(_json_safe(metrics), indent=1))
    for k in confusion.levels:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["id", "name", "iou", "precision", "recall", "f1", "support"])
        for row in metrics["levels"][f"level{k}"]["per_class"]:
            writer.writerow(
                [row["id"], row["name"]]
                + [_fmt(row[m]) for m in ("iou", "precision", "recall", "f1")]
                + [row["support"]]
            )
        written[f"per_class_level{k}"] = write_text_atomic(out / f"per_class_level{k}.csv", text.getvalue())
    arrays = {
        f"{area}_level{level}": m.cpu().numpy()
        for area, ms in confusion.matrices.items()
        for level, m in zip(confusion.levels, ms)
    }
    written["confusion"] = write_atomic(out / "confusion.npz", lambda file: np.savez_compressed(file, **arrays))
    written.update(plot_report(metrics, confusion, out, taxonomy))
    return written


def plot_report(
    metrics: dict, confusion: HierarchicalConfusion, out: Path, taxonomy: Taxonomy | None = None
) -> dict[str, Path]:
    """Confusion matrices (most frequent classes, row-normalised), per-class F1 bars, changed vs unchanged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    for role, fig in _figures(plt, metrics, confusion, taxonomy):
        if fig is None:  # no labelled pixel to plot
            continue
        try:
            written[role] = write_figure_atomic(out / f"{role}.png", fig, dpi=100)
        finally:
            plt.close(fig)
    return written


def _figures(
    plt: ModuleType, metrics: dict, confusion: HierarchicalConfusion, taxonomy: Taxonomy | None
) -> Iterator[tuple[str, Figure | None]]:
    """(role, figure or None) of each plot, built one at a time so only one is open at once."""
    for index, level_number in enumerate(confusion.levels):
        level = f"level{level_number}"
        names = (
            taxonomy.class_names(level_number)
            if taxonomy
            else tuple(str(i) for i in range(confusion.num_classes[index]))
        )
        yield f"confusion_{level}", _confusion_figure(plt, confusion.matrices["all"][index].cpu().numpy(), names, level)
        yield f"f1_{level}", _f1_figure(plt, metrics, level_number, taxonomy)
    yield "changed_vs_unchanged", _changed_figure(plt, metrics)


def _confusion_figure(plt: ModuleType, matrix: np.ndarray, names: Sequence[str], level: str) -> Figure | None:
    """The confusion matrix of the most frequent classes, each row normalised to its class's pixels."""
    matrix = matrix.astype(np.float64)
    support = matrix.sum(axis=1)
    top = [int(c) for c in np.argsort(-support, kind="stable")[:CONFUSION_TOP_CLASSES] if support[c] > 0]
    if not top:
        return None
    sub = matrix[np.ix_(top, top)]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = sub / matrix[top].sum(axis=1, keepdims=True)  # share of each class's pixels
    size = 3 + 0.38 * len(top)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    labels = [_short(names[c]) for c in top]
    ax.set_xticks(range(len(top)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title(f"{level}: confusion, row-normalised ({len(top)} most frequent classes)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the label's pixels")
    fig.tight_layout()
    return fig


def _f1_figure(plt: ModuleType, metrics: dict, level_number: int, taxonomy: Taxonomy | None) -> Figure | None:
    """Per-class F1 bars of a level, the most frequent classes first, with the level's mF1 as a line."""
    level = f"level{level_number}"
    rows = [r for r in metrics["levels"][level]["per_class"] if r["support"] > 0]
    rows = sorted(rows, key=lambda r: -r["support"])[:F1_TOP_CLASSES]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(rows) + 2), 4))
    f1 = [0.0 if _isnan(r["f1"]) else r["f1"] for r in rows]
    colours = taxonomy.colours(level_number)[[r["id"] for r in rows]] / 255 if taxonomy else None
    ax.bar(range(len(rows)), f1, color=colours, edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(rows)), [_short(r["name"]) for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.axhline(metrics["levels"][level]["mf1"], color="black", linestyle="--", linewidth=0.8, label="mF1")
    ax.set_title(f"{level}: per-class F1 (classes by support, most frequent first)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _changed_figure(plt: ModuleType, metrics: dict) -> Figure:
    """mF1 per level where the crop changed since last year's and where it did not."""
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    names = list(metrics["levels"])
    for offset, area, colour in ((-width / 2, "changed", "tab:orange"), (width / 2, "unchanged", "tab:blue")):
        values = [metrics[area]["levels"][name]["mf1"] for name in names]
        values = [0.0 if _isnan(v) else v for v in values]
        bars = ax.bar(np.arange(len(names)) + offset, values, width, label=area, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mF1")
    ax.set_title("crop changed vs unchanged since last year", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def format_summary(metrics: dict) -> str:
    """A short table for the terminal."""
    lines = [f"{metrics['split']}: {metrics['n_samples']} samples, {metrics['n_pixels']:,} labelled pixels"]
    lines.append(f"{'':10}{'OA':>8}{'mIoU':>8}{'mF1':>8}{'changed mF1':>13}{'unchanged mF1':>15}")
    for level, row in metrics["levels"].items():
        lines.append(
            f"{level:10}{_pct(row['oa'])}{_pct(row['miou'])}{_pct(row['mf1'])}"
            f"{_pct(metrics['changed']['levels'][level]['mf1'], 13)}{_pct(metrics['unchanged']['levels'][level]['mf1'], 15)}"
        )
    mean = metrics["mean"]
    lines.append(
        f"{'mean':10}{_pct(mean['oa'])}{_pct(mean['miou'])}{_pct(mean['mf1'])}"
        f"{_pct(metrics['changed']['mean']['mf1'], 13)}{_pct(metrics['unchanged']['mean']['mf1'], 15)}"
    )
    lines.append(f"hierarchy consistency of predictions: {_pct(metrics['consistency'], 0).strip()}")
    return "\n".join(lines)


def _pct(value: float, width: int = 8) -> str:
    return f"{'n/a':>{width}}" if value is None or _isnan(value) else f"{100 * value:>{width}.1f}"


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: float) -> str:
    return "" if _isnan(value) else f"{value:.6f}"


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
