"""Ray start-up and the console: join or start Ray, keep Ray's own chatter in its log files.

By default (``--verbose`` off) the driver shows only h2crop's own lines and progress bars: Ray's driver-side
INFO/WARNING messages are not printed, workers' output is not forwarded (it stays in the session's log
files, named on :func:`ray_log_dir`), and third-party Python warnings are hidden. Training progress reaches
the driver through :mod:`pipelines.runtime.progress` instead of worker prints.
"""

from __future__ import annotations

import logging
import os
import warnings

from h2crop_core.errors import SettingError

#: set by ``h2crop --verbose`` (inherited by child processes and jobs started from here)
VERBOSE_ENV = "H2CROP_VERBOSE"
#: loggers of libraries whose INFO/WARNING lines a user cannot act on
CHATTY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "urllib3", "filelock", "py.warnings")


def verbose() -> bool:
    """Whether Ray's own output is shown. Only the ``h2crop`` command quiets it: library use (a notebook,
    a benchmark) keeps Ray's defaults."""
    return os.environ.get(VERBOSE_ENV, "1") != "0"


def configure_console(verbose_mode: bool) -> None:
    """Set up the process's logging and warnings for a command (``--verbose`` shows everything)."""
    os.environ[VERBOSE_ENV] = "1" if verbose_mode else "0"
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # no duplicated worker prints
    if verbose_mode:  # undo an earlier quiet command in this process (the demo runs several)
        warnings.resetwarnings()
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    warnings.filterwarnings("ignore")  # third-party deprecations; h2crop itself reports through errors
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # and in the processes started from here
    silence_loggers()


def silence_loggers() -> None:
    """Libraries' INFO/WARNING lines off the console (again after Ray or Ray Data set up their own logging)."""
    if verbose():
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def connect_ray(num_cpus: int | None = None) -> None:
    """Join ``RAY_ADDRESS`` if set (``ray job submit``); otherwise start a local Ray sized to the machine.

    On small machines the local Ray gets more logical CPUs than cores: training workers and Ray Data's
    read tasks must be schedulable together (with 2 workers on 2 cores, reads would starve). The
    dashboard stays on (loopback only): Train's placement-group cleaner queries the State API through it.
    """
    import ray

    if ray.is_initialized():
        return
    loud = verbose()
    common = {"log_to_driver": loud, "logging_level": logging.INFO if loud else logging.ERROR}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
    else:
        # Sweeps run several trials' actors, Train workers and Ray Data tasks at once: more Python workers
        # than a 2-core machine's startup concurrency (2), for which the raylet prints a warning per 2 more.
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(max(8, os.cpu_count() or 1)))
        ray.init(
            address="local",
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            **common,
        )
    silence_loggers()  # ray.init re-levels its loggers


def check_resources(per_unit: dict[str, float], count: int, unit: str, group: str, hint: str) -> None:
    """Refuse work that no Ray node, or the whole cluster, can host: Ray would otherwise wait forever.

    Args:
        per_unit: resources of one worker or actor, e.g. ``{"CPU": 1, "GPU": 0}``.
        count: how many of them run at once.
        unit, group: what they are called in the message ("actor", "actor pool").
        hint: which options to change.
    """
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for key, wanted in per_unit.items():
        largest = max((node.get(key, 0) for node in nodes), default=0)
        if wanted > largest:
            raise SettingError(f"one {unit} needs {wanted:g} {key}; the largest Ray node has {largest:g}: {hint}")
        total = sum(node.get(key, 0) for node in nodes)
        if wanted * count > total:
            raise SettingError(f"the {group} needs {wanted * count:g} {key} (the Ray cluster has {total:g}): {hint}")


def cluster_autoscales() -> bool:
    """Whether an autoscaler may still add nodes to the connected cluster (see :func:`autoscales`)."""
    from ray.experimental.internal_kv import _internal_kv_get

    return autoscales(_internal_kv_get("__autoscaling_status"))  # ray_constants.DEBUG_AUTOSCALING_STATUS


def autoscales(report: bytes | None) -> bool:
    """Read the autoscaler's status report: a local Ray and a ``ray start`` cluster report only their own
    nodes (types ``node_<id>``); a launcher or KubeRay autoscaler reports its node types ("gpu-group", ...).
    Without a report (another autoscaler version) it is assumed to autoscale: waiting is safer than
    refusing work it could place."""
    import json

    try:
        types = list(json.loads(report)["autoscaler_report"]["node_type_mapping"].values()) if report else None
    except (KeyError, TypeError, ValueError, AttributeError):
        types = None
    return not types or not all(str(kind).startswith("node_") for kind in types)


def check_placement(
    per_unit: dict[str, float], count: int, unit: str, group: str, hint: str, *, autoscaling: bool | None = None
) -> None:
    """:func:`check_resources` where the cluster is fixed (a local Ray, ``ray start`` nodes); on an
    autoscaling cluster a request nothing fits yet waits for nodes, and says so. ``autoscaling``: None reads
    the autoscaler's report (:func:`cluster_autoscales`)."""
    try:
        check_resources(per_unit, count, unit, group, hint)
    except SettingError:
        if not (cluster_autoscales() if autoscaling is None else autoscaling):
            raise
        wanted = ", ".join(f"{v:g} {k}" for k, v in per_unit.items() if v)
        print(
            f"waiting for the autoscaler: {count} x {unit} ({wanted}) do not fit the nodes up now; it will add nodes if "
            f"its node types allow (Ctrl-C, or `ray job stop`, to give up)",
            flush=True,
        )


def quiet_data_context() -> None:
    """Ray Data's per-split progress bars and plan printouts are noise next to h2crop's own bars."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    silence_loggers()  # Ray Data configures its loggers on import (and warns that its bars are off)


def ray_log_dir() -> str:
    """Where this Ray session keeps every process's log files (shown when a run fails)."""
    try:
        import ray

        return str(ray._private.worker._global_node.get_logs_dir_path())  # no public API names it
    except Exception:  # noqa: BLE001 - only a hint for the user; never worth failing over
        return "/tmp/ray/session_latest/logs"
