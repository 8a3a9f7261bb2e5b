"""Ray for the pipeline tests: one local Ray per session (a 2-node cluster test swaps it out and back)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before Ray is imported anywhere: quiet, fail-fast settings (see RAY_NOTES.md) and no token auth, so
# the CLI, the driver and any `ray start` node agree.
for key, value in {
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # Train's controller polls its workers every 2 s: notices the end of a run sooner
    "RAY_AUTH_MODE": "disabled",
}.items():
    os.environ.setdefault(key, value)
os.environ.pop("RAY_ADDRESS", None)

LOCAL_RAY = {
    "num_cpus": 4,
    "object_store_memory": 1 << 30,
    "include_dashboard": True,
    "log_to_driver": False,
}  # as the CLI runs it
#: what the test process is connected to: None, "local" (the session's local Ray) or "other"
RAY_STATE = {"kind": None}


@pytest.fixture()
def ray_local(s3_server):
    """The session's local Ray (started on first use; restarted if a cluster test replaced it). Its nodes
    start with the session S3 server's variables, so Ray Train, Tune and map actors reach ``s3://`` there."""
    import ray

    if ray.is_initialized() and RAY_STATE["kind"] != "local":
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", **LOCAL_RAY)
        RAY_STATE["kind"] = "local"
    yield ray


def release_ray() -> None:
    """Disconnect the test process from any Ray, before a test brings its own cluster."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    RAY_STATE["kind"] = None


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 samples of 96x96 px (EnMAP 32x32): a fast stand-in for Ray training tests."""
    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.data.stats import compute_norm_stats
    from h2crop_core.data.synth import synthesize_dataset

    spec = SampleSpec(size=96)
    root = tmp_path_factory.mktemp("train") / "data"
    synthesize_dataset(root, 14, seed=5, spec=spec, region_size=None, progress=False)
    index = DatasetIndex(root)
    compute_norm_stats(index.split_paths("train"), spec=spec, progress=False).to_json(index.norm_stats_path)
    return root


@pytest.fixture(scope="session")
def prepared_data(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``h2crop prepare`` of the session region (192 px) into four 96-px samples, one block each (train 2, val
    1, test 1), national codes through the crosswalk, last year's register as the prior; with its statistics."""
    from h2crop_core.data.index import DatasetIndex
    from h2crop_core.data.reader import infer_dataset_spec
    from h2crop_core.data.stats import compute_norm_stats
    from pipelines.preparing.run import prepare_dataset
    from pipelines.settings import PrepareSettings

    region, root = synth_root / "region", tmp_path_factory.mktemp("prepared") / "data"
    settings = PrepareSettings(
        s2=str(region / "s2.tif"), enmap=str(region / "enmap.tif"), parcels=str(region / "parcels.gpkg"),
        code_column="CODE_CULTU", crosswalk=str(region / "crosswalk.csv"),
        prior_parcels=str(region / "parcels_prior.gpkg"), taxonomy=str(synth_root / "cascade_labels.csv"),
        output=str(root), tile=96, block=0.96, split=(0.5, 0.25, 0.25), outside="background", ray=False,
    )  # fmt: skip
    prepare_dataset(settings, progress=False)
    index = DatasetIndex(root)
    paths = index.split_paths("train")
    compute_norm_stats(paths, spec=infer_dataset_spec(paths), progress=False).to_json(index.norm_stats_path)
    return root


def kill_cli_when(argv: list[str], ray, ready, timeout: float = 120):
    """Run ``h2crop argv`` in its own process group on the session's Ray and SIGKILL it (no clean-up) once
    ``ready()`` is true (or it ended, or ``timeout`` passed); returns the finished process (stderr piped)."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli.main", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and driver.poll() is None and not ready():
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(30)
    return driver


def pytest_sessionfinish(session, exitstatus):
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
