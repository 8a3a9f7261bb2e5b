"""Multi-node behaviour on one machine: `cluster/local.sh` (two Ray nodes on distinct loopback addresses) with
an S3 server and an MLflow server, driven through `ray job submit` as a user would; the node loss test comes
last but one (it takes node 2 away), `local.sh down` last."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from h2crop_core.data.index import DatasetIndex
from pipelines.training.worker import MODEL_FILE
from tests.pipelines.conftest import RAY_STATE, release_ray

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[3]


# ------------------------------------------------------- cluster/local.sh: jobs, S3, MLflow server, node loss
HEAD, NODE2 = "127.0.0.2", "127.0.0.3"
LOCAL_SH = REPO / "cluster" / "local.sh"
SNAPSHOT = "checkpoint_manager_snapshot.json"  #: Train's record of its committed checkpoints
TRAIN = [
    "--preset",
    "tiny_crops_S2_H_P_jun",
    "--lr",
    "2e-3",
    "--batch-size",
    "2",
    "--loader-workers",
    "0",
    "--cpus-per-worker",
    "2",
]


@dataclass
class LocalCluster:
    env: dict  #: the environment its nodes were started with (and `ray job submit` runs with)
    root: Path  #: its H2CROP_CLUSTER_DIR
    address: str  #: the job API
    tracking_uri: str  #: the MLflow server every job logs to
    artifacts: Path  #: where that server keeps artifacts

    def sessions(self) -> list[int]:
        path = self.root / "sessions"
        return [int(line) for line in path.read_text().split()] if path.is_file() else []

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)


@contextlib.contextmanager
def _driver():
    """This test process as a driver on the local cluster (as another machine's `h2crop` would be)."""
    import ray

    release_ray()
    ray.init(address=f"{HEAD}:6391")
    RAY_STATE["kind"] = "other"
    try:
        yield ray
    finally:
        release_ray()


def _pids_of(session: int) -> list[int]:
    """Live processes of a session (not zombies: those are dead, waiting for a parent to reap them)."""
    listed = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    return [
        int(pid)
        for pid, sid, stat in (line.split()[:3] for line in listed.splitlines())
        if int(sid) == session and not stat.startswith("Z")
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(what: str, check, timeout: float = 180.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def local_cluster(s3_server, tmp_path_factory):
    """`cluster/local.sh up` (3 CPUs a node, ports of its own) with the S3 server's variables on its nodes,
    and `cluster/mlflow_server.sh` on loopback; `down` at the end."""
    release_ray()
    work = tmp_path_factory.mktemp("cluster")
    root = Path(tempfile.mkdtemp(prefix="h2c", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = _free_port()
    mlflow_env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PORT=str(port),
        STORE=f"sqlite:///{work / 'mlflow.db'}",
        ARTIFACTS=str(work / "mlartifacts"),
    )
    server = subprocess.Popen(
        ["bash", str(REPO / "cluster" / "mlflow_server.sh")],
        env=mlflow_env,
        cwd=work,
        stdout=open(work / "mlflow.log", "w"),  # noqa: SIM115 - the server's log, open as long as the server runs
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = dict(
        os.environ,
        CPUS="3",
        PORT="6391",
        DASHBOARD_PORT="8266",
        H2CROP_CLUSTER_DIR=str(root),
        VENV=str(Path(sys.executable).parent.parent),
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )  # a lost node is noticed in ~3 s
    cluster = LocalCluster(env, root, f"http://{HEAD}:8266", f"http://127.0.0.1:{port}", work / "mlartifacts")
    try:
        up = subprocess.run(["bash", str(LOCAL_SH), "up"], env=env, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        _wait("the MLflow server", lambda: _answers(f"{cluster.tracking_uri}/health"), timeout=120)
        yield cluster
    finally:
        subprocess.run(["bash", str(LOCAL_SH), "down"], env=env, capture_output=True, timeout=120)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _job_args(
    cluster: LocalCluster, data: Path, name: str, storage: str, output: Path, epochs: int, workers: int
) -> list[str]:
    return [
        "h2crop",
        "train",
        "--data",
        str(data),
        *TRAIN,
        "--epochs",
        str(epochs),
        "--workers",
        str(workers),
        "--run-name",
        name,
        "--storage",
        storage,
        "--output",
        str(output),
        "--tracking-uri",
        cluster.tracking_uri,
    ]


def _submit(cluster: LocalCluster, args: list[str], *extra: str) -> subprocess.CompletedProcess:
    """`ray job submit` as a user types it."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    for _ in range(30):
        done = subprocess.run(
            [ray_cli, "job", "submit", "--address", cluster.address, *extra, "--", *args],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "No available agent to submit job" not in done.stderr:  # the head's job agent registers seconds after `up`
            return done
        time.sleep(1)
    return done


def _finished(cluster: LocalCluster, job: str, timeout: float = 300.0) -> str:
    from ray.job_submission import JobStatus

    client = cluster.client()
    status = _wait(f"job {job}", lambda: (s := client.get_job_status(job)).is_terminal() and s, timeout=timeout)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)[-4000:]
    return client.get_job_logs(job)


def _keys(bucket: str, prefix: str) -> list[str]:
    import boto3

    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket.removeprefix("s3://"), Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _lock_entries(bucket: str, run: str) -> list[str]:
    return [k for k in _keys(bucket, f"runs/.h2crop_locks/{run}/") if k.endswith(".json")]


def _checkpoints(bucket: str, run: str) -> list[str]:
    return sorted(k for k in _keys(bucket, f"runs/{run}/") if k.endswith(f"/{MODEL_FILE}"))


def test_the_job_api_reaches_both_nodes_and_a_fixed_cluster_refuses_what_it_cannot_place(
    local_cluster, train_data, tmp_path
):
    job = _submit(
        local_cluster,
        _job_args(local_cluster, train_data, "gpu", str(tmp_path / "runs"), tmp_path / "gpu", 1, 1) + ["--use-gpu"],
    )
    assert job.returncode != 0
    assert (
        "one training worker needs 1 GPU; the largest Ray node has 0" in job.stdout + job.stderr
    )  # refused, not retried forever
    assert not _answers(
        f"http://{HEAD}:{local_cluster.tracking_uri.rsplit(':', 1)[1]}/health"
    )  # the MLflow server is on 127.0.0.1 only
    from ray.experimental.internal_kv import _internal_kv_get

    from pipelines.runtime.cluster import autoscales, cluster_autoscales

    with _driver():  # `ray start` nodes: a fixed cluster, told apart from an autoscaling one by the autoscaler's report
        assert not cluster_autoscales()
        report = json.loads(_wait("the autoscaler's report", lambda: _internal_kv_get("__autoscaling_status")))
    report["autoscaler_report"]["node_type_mapping"] = dict.fromkeys(
        report["autoscaler_report"]["node_type_mapping"], "gpu-group"
    )
    assert autoscales(json.dumps(report).encode()) and autoscales(None)  # a launcher/KubeRay report; none at all


def test_a_job_on_two_nodes_checkpoints_to_s3_and_a_second_of_its_name_is_refused(
    local_cluster, train_data, s3_bucket, tmp_path
):
    from mlflow.tracking import MlflowClient

    storage = f"{s3_bucket}/runs"
    first = _job_args(local_cluster, train_data, "shared", storage, tmp_path / "first", 2, 2) + [
        "--input-mode",
        "arrays",
    ]
    submitted = _submit(
        local_cluster, first, "--submission-id", "shared-first", "--no-wait", "--working-dir", str(REPO)
    )
    assert submitted.returncode == 0, submitted.stderr
    _wait("the first job's lock", lambda: _lock_entries(s3_bucket, "shared"))
    second = _submit(local_cluster, _job_args(local_cluster, train_data, "shared", storage, tmp_path / "second", 1, 2))
    assert second.returncode != 0
    assert (
        f"training name 'shared' is in use in {storage}: held by training on host {socket.gethostname()}"
        in second.stdout
    )
    logs = _finished(local_cluster, "shared-first")  # untouched by the refused one
    assert "2 training worker(s) on 2 node(s): " in logs and HEAD in logs and NODE2 in logs
    assert len(_checkpoints(s3_bucket, "shared")) == 2  # both epochs' checkpoints in the bucket (num_to_keep=2)
    assert not _lock_entries(s3_bucket, "shared")  # released
    assert (tmp_path / "first" / "best.ckpt").is_file() and not (tmp_path / "second").exists()
    client = MlflowClient(local_cluster.tracking_uri)  # logged over HTTP to the server, artifacts uploaded through it
    runs = client.search_runs([client.get_experiment_by_name("h2crop").experiment_id], "attributes.run_name = 'shared'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert list(local_cluster.artifacts.rglob("best.ckpt"))
    index = DatasetIndex(train_data)  # read in Ray Data tasks on both nodes: each split exactly once per epoch
    for key, split in (("train_samples", "train"), ("val_samples", "val")):
        history = client.get_metric_history(runs[0].info.run_id, key)
        assert sorted(m.step for m in history) == [1, 2] and {m.value for m in history} == {
            len(index.split_paths(split))
        }


def test_losing_the_worker_node_mid_epoch_resumes_on_the_head(local_cluster, train_data, s3_bucket, tmp_path):
    from mlflow.tracking import MlflowClient
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    epochs, storage = 2, f"{s3_bucket}/runs"
    args = _job_args(local_cluster, train_data, "nodeloss", storage, tmp_path / "out", epochs, 1)
    with _driver() as ray:  # hold 2 of the head's 3 CPUs, so the training's worker (2 CPUs) starts on node 2
        head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == HEAD)
        hold = (
            ray.remote(num_cpus=2)(_Hold)
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
            .remote()
        )
        ray.get(hold.ready.remote())
        assert _submit(local_cluster, args, "--submission-id", "nodeloss", "--no-wait").returncode == 0
        # the first checkpoint is committed once Train has recorded it in its snapshot; epoch 2 runs then
        _wait("the first committed checkpoint", lambda: _keys(s3_bucket, f"runs/nodeloss/{SNAPSHOT}"), every=0.1)
        for pid in _pids_of(local_cluster.sessions()[1]):  # node 2's raylet, its workers, everything it started
            os.kill(pid, signal.SIGKILL)
        ray.kill(hold)  # the head can now host the restarted worker
        logs = _finished(local_cluster, "nodeloss")
    assert "restarting the workers from the last checkpoint" in logs, logs
    assert f"1 training worker(s) on 1 node(s): {NODE2} (1)" in logs and f"on 1 node(s): {HEAD} (1)" in logs
    assert "resuming nodeloss after epoch 1" in logs  # only the interrupted epoch is repeated
    client = MlflowClient(local_cluster.tracking_uri)
    run = client.search_runs(
        [client.get_experiment_by_name("h2crop").experiment_id], "attributes.run_name = 'nodeloss'"
    )[0]
    samples = client.get_metric_history(run.info.run_id, "train_samples")
    split = len(DatasetIndex(train_data).split_paths("train"))
    assert sorted(m.step for m in samples) == list(range(1, epochs + 1))  # every epoch logged once
    assert all(m.value == split for m in samples)  # and saw the split exactly once


class _Hold:
    def ready(self) -> bool:
        return True


def test_down_leaves_no_process_of_its_own(local_cluster):
    sessions = local_cluster.sessions()
    assert sessions and any(_pids_of(s) for s in sessions)
    down = subprocess.run(
        ["bash", str(LOCAL_SH), "down"], env=local_cluster.env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 0, down.stderr
    assert not any(_pids_of(s) for s in sessions)
    assert not local_cluster.root.exists()
    record = Path("/tmp/ray/ray_current_cluster")
    assert not record.is_file() or f"{HEAD}:6391" not in record.read_text()
