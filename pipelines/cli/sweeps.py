"""``h2crop tune`` and ``h2crop runs compare | gain | early-season | ui``: sweeps and what is read from them."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections import Counter
from pathlib import Path

from h2crop_core.errors import SettingError
from h2crop_core.files import write_text_atomic
from pipelines.cli.options import add_settings_options, settings_from_args
from pipelines.settings import TUNE_BASE_SETTINGS, TrainSettings, TuneSettings, parse_overrides
from pipelines.training.finetune import START_SETTINGS

UI_HOST, UI_PORT = "127.0.0.1", 5000
#: h2crop's install brings the whole mlflow, UI included, at the version that writes the runs
UI_INSTALL = "make install, or pip install -e ."


# ------------------------------------------------------------------------------------------ commands
def cmd_tune(args: argparse.Namespace) -> int:
    from pipelines.runs.compare import compare_records, format_records, load_runs
    from pipelines.sweeps.sweep import run_sweep

    settings = settings_from_args(TuneSettings, args)
    base = settings_from_args(TrainSettings, args, preset="", overrides=parse_overrides(args.set or []))
    outcome = run_sweep(settings, base, progress=not args.quiet)
    rows = load_runs(outcome.tracking_uri, outcome.experiment, outcome.name, (outcome.metric,))
    columns, records = compare_records(rows, outcome.metric)
    print(
        f"\nsweep {outcome.name}: {outcome.trials} trials ({outcome.errors} failed); best {outcome.best_trial} "
        f"with {outcome.metric} {outcome.best_value:.4f}"
    )
    if outcome.errors:
        print(
            f"  {outcome.errors} trial(s) failed: their errors are in {outcome.tune_path}/<trial>/error.txt; the same command runs them again"
        )
    print(format_records(columns, records))
    summary = outcome.output / "sweep_summary.csv"
    write_text_atomic(summary, format_records(columns, records, "csv"))
    print(
        f"wall time {outcome.wall_s / 60:.1f} min; the trials' own times add up to {outcome.trial_s / 60:.1f} min "
        f"({outcome.trial_s / max(outcome.wall_s, 1e-9):.2f}x the wall time); summary {summary}"
    )
    uri = f"--tracking-uri {outcome.tracking_uri}"
    print(f"next: h2crop runs compare --sweep {outcome.name} {uri} --by <setting> --plot compare.png")
    print(f"      h2crop runs gain | early-season --sweep {outcome.name} {uri} --output DIR;  h2crop runs ui {uri}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pipelines.runs.compare import compare_records, format_records, metric_key, plot_compare, varied_keys

    metric = metric_key(args.metric)
    rows = _rows(args, (metric,))
    columns, records = compare_records(rows, metric)
    print(format_records(columns, records, args.format))
    if args.plot:
        by = args.by or next(iter(varied_keys(rows)), None)
        if by is None:
            raise SettingError("--plot: no setting varies between these runs; nothing to plot against")
        print(
            f"plot of per-level mF1 across {by}: {plot_compare(rows, by, args.plot)}",
            file=sys.stderr if args.format != "table" else sys.stdout,
        )
    return 0


def cmd_gain(args: argparse.Namespace) -> int:
    from pipelines.runs.reports import format_gain, write_gain

    written = write_gain(_rows(args), args.output)
    print(format_gain(written["records"]))
    print(f"wrote {written['csv']} and {written['png']}")
    return 0


def cmd_early_season(args: argparse.Namespace) -> int:
    from pipelines.runs.compare import LEVELS
    from pipelines.runs.reports import write_early_season

    written = write_early_season(_rows(args), _uri(args), args.output, args.target)
    print(f"{'series':<24}{'window':<8}{'months':>7}" + "".join(f"{lv:>9}" for lv in LEVELS))
    cells: dict[tuple, dict] = {}
    for r in written["levels"]:
        cells.setdefault((r["series"], r["months"], r["window"]), {})[r["level"]] = r["mf1"]
    for (series, months, window), values in cells.items():
        print(
            f"{series[:23]:<24}{window:<8}{months:>7}"
            + "".join(f"{values.get(lv, float('nan')):>9.3f}" for lv in LEVELS)
        )
    reached = Counter(
        (r["earliest_months"] or 99, r["earliest_window"] or "never")
        for r in written["earliest"]
        if r["level"] == "level4"
    )
    if reached:
        print(
            "level-4 classes reaching their target first at: "
            + ", ".join(f"{w} {n}" for (_, w), n in sorted(reached.items()))
        )
    files = [
        written[k] for k in ("levels_csv", "classes_csv", "earliest_csv", "levels_png", "classes_png") if k in written
    ]
    print("wrote " + ", ".join(map(str, files)))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = _uri(args)
    if not _ui_installed():
        raise SettingError(
            f"the MLflow UI's pages are missing from this environment's mlflow: reinstall h2crop ({UI_INSTALL})"
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: the MLflow UI listens on {args.host}: anyone who reaches this machine can read and change the runs",
            file=sys.stderr,
        )
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    return subprocess.call(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
    )


def _ui_installed() -> bool:
    """The UI's web pages ship with the full mlflow package only (mlflow-skinny serves the API alone)."""
    spec = importlib.util.find_spec("mlflow")
    return (
        importlib.util.find_spec("flask") is not None
        and spec is not None
        and any((Path(folder) / "server" / "js" / "build").is_dir() for folder in spec.submodule_search_locations or ())
    )


def _uri(args: argparse.Namespace) -> str:
    from pipelines.runtime.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri or None)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SettingError(
            f"--tracking-uri {uri}: no MLflow store there (h2crop train and tune write sqlite:///./mlruns.db by default)"
        )
    return uri


def _rows(args: argparse.Namespace, extra_metrics: tuple[str, ...] = ()):
    from pipelines.runs.compare import load_runs

    return load_runs(_uri(args), args.experiment, getattr(args, "sweep", None), extra_metrics)


# ------------------------------------------------------------------------------------------- parsers
def add_sweep_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``tune`` and ``runs`` with its four subcommands."""
    p = sub.add_parser(
        "tune",
        parents=[common],
        help="sweep a search space (tune_spaces/*.yaml) with Ray Tune: ASHA, MLflow parent/child runs; resumes by --name",
    )
    add_settings_options(p, TuneSettings)
    add_settings_options(p, TrainSettings, only=TUNE_BASE_SETTINGS + START_SETTINGS)  # the start: every trial's
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="model setting for every trial (the space's model.* keys win), e.g. --set precision=fp32",
    )
    p.set_defaults(func=cmd_tune)

    runs = sub.add_parser(
        "runs", parents=[common], help="compare runs and sweeps from the MLflow store: compare, gain, early-season, ui"
    )
    commands = runs.add_subparsers(dest="runs_command", required=True, metavar="RUNS_COMMAND")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: sqlite:///./mlruns.db)")
    store.add_argument("--experiment", default="h2crop", help="MLflow experiment (default: h2crop)")

    p = commands.add_parser(
        "compare", parents=[common, store], help="runs as rows, best first; repeated configurations as mean ± std"
    )
    p.add_argument("--sweep", help="only this sweep's trials (default: every run of the experiment)")
    p.add_argument(
        "--metric",
        default="mean.mf1",
        help="sort by this metric at each run's best epoch: mean.mf1, level4.mf1, mean.oa, ... (default: mean.mf1)",
    )
    p.add_argument("--by", help="the setting the plot puts on its x axis (default: the first that varies)")
    p.add_argument("--plot", type=Path, help="write a PNG of per-level mF1 across --by")
    p.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    p.set_defaults(func=cmd_compare)

    for name, help_text, func in (
        (
            "gain",
            "the hyperspectral gain: per window, mF1 with EnMAP minus without, paired by setting and seed (CSV, PNG, table)",
            cmd_gain,
        ),
        (
            "early-season",
            "per-level and per-class F1 against months of data, and each class's earliest good window (CSV, PNG)",
            cmd_early_season,
        ),
    ):
        p = commands.add_parser(name, parents=[common, store], help=help_text)
        p.add_argument("--sweep", required=True, help="the sweep (h2crop tune --name)")
        p.add_argument("--output", required=True, type=Path, help="folder for the CSVs and PNGs")
        if name == "early-season":
            p.add_argument("--target", type=float, help="the F1 a class must reach (default: 0.8 of its best F1)")
        p.set_defaults(func=func)

    p = commands.add_parser(
        "ui",
        parents=[common],
        help="serve the MLflow UI for a tracking store (on this machine only unless --host says otherwise)",
    )
    p.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: sqlite:///./mlruns.db)")
    p.add_argument("--host", default=UI_HOST, help=f"address to listen on (default: {UI_HOST}, this machine only)")
    p.add_argument("--port", type=int, default=UI_PORT, help=f"port (default: {UI_PORT})")
    p.set_defaults(func=cmd_ui)
