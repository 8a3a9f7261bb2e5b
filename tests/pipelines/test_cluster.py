"""Multi-node behaviour on one machine: two Ray nodes on distinct loopback addresses, and `ray job submit`."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleReader, infer_spec

from .conftest import RAY_STATE, release_ray

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    release_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "node_ip_address": "127.0.0.2", "include_dashboard": False})
    cluster.add_node(num_cpus=3, node_ip_address="127.0.0.3")
    ray.init(address=cluster.address)
    RAY_STATE["kind"] = "cluster"
    try:
        yield cluster
    finally:
        release_ray()
        cluster.shutdown()


def _shard_loop(config: dict) -> None:
    """Drain both datasets for two epochs and record what this rank saw, and on which node."""
    import ray
    import ray.train

    from pipelines.ray_data import ShardReader, shard_paths

    rank = ray.train.get_context().get_world_rank()
    node = ray.get_runtime_context().get_node_id()
    out = Path(config["out"])
    reader = SampleReader("jun", ("s2", "label"), spec=config["spec"])
    arrays = ShardReader(ray.train.get_dataset_shard("arrays"), "arrays", reader, 3)
    files = ShardReader(ray.train.get_dataset_shard("files"), "paths", reader, 2, all_paths=config["files"], loader_workers=1)
    for epoch in range(2):
        seen = {
            "paths": shard_paths(ray.train.get_dataset_shard("paths")),
            "arrays": [n for batch in arrays.epoch() for n in batch["name"]],
            "files": [n for batch in files.epoch(shuffle_seed=epoch) for n in batch["name"]],
        }
        (out / f"epoch{epoch}_rank{rank}.json").write_text(json.dumps({"node": node, **seen}))
        ray.train.report({"epoch": epoch})


def test_shards_cover_the_split_exactly_once_per_epoch_on_two_nodes(two_nodes, train_data, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.ray_data import ExactlyOnceDataConfig, array_dataset, path_dataset

    paths = [f"/data/sample_{i:03d}.h5" for i in range(51)]  # odd on purpose: the default split drops one
    files = DatasetIndex(train_data).all_paths()
    spec = infer_spec(files[0])
    trainer = TorchTrainer(
        _shard_loop,
        train_loop_config={"out": str(tmp_path), "spec": spec, "files": [str(f) for f in files]},
        scaling_config=ray.train.ScalingConfig(num_workers=2, placement_strategy="SPREAD", resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="shards", storage_path=str(tmp_path / "storage")),
        datasets={
            "paths": path_dataset(paths),
            "arrays": array_dataset(files, SampleReader("jun", ("s2", "label"), spec=spec), read_batch=2),
            "files": path_dataset(files, shuffle=True),
        },
        dataset_config=ExactlyOnceDataConfig(),
    )
    trainer.fit()
    for epoch in range(2):
        ranks = [json.loads((tmp_path / f"epoch{epoch}_rank{r}.json").read_text()) for r in range(2)]
        assert ranks[0]["node"] != ranks[1]["node"]  # one worker per node
        seen_paths = ranks[0]["paths"] + ranks[1]["paths"]
        assert sorted(seen_paths) == sorted(paths)  # every path once, none twice
        assert all(ranks[r]["paths"] for r in range(2))  # both workers got work
        for mode in ("arrays", "files"):  # read in Ray Data tasks / read on the workers
            seen_names = ranks[0][mode] + ranks[1][mode]
            assert sorted(seen_names) == sorted(p.stem for p in files)


@pytest.fixture()
def ray_head():
    """A `ray start` head with the dashboard (the job API), started from this venv."""
    release_ray()
    temp = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", RAY_AUTH_MODE="disabled")
    ray_cli = str(Path(sys.executable).parent / "ray")
    start = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.2", "--port=6390", "--num-cpus=4",
             "--include-dashboard=true", "--dashboard-host=127.0.0.2", "--dashboard-port=8265",
             "--disable-usage-stats", f"--temp-dir={temp}"]
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_a_one_epoch_training(ray_head, train_data, tmp_path):
    ray_cli = str(Path(sys.executable).parent / "ray")
    command = [
        ray_cli, "job", "submit", "--address", "http://127.0.0.2:8265", "--working-dir", str(REPO), "--",
        "h2crop", "train", "--data", str(train_data), "--preset", "tiny_crops_S2_H_P_jun", "--epochs", "1",
        "--workers", "2", "--batch-size", "2", "--loader-workers", "0", "--run-name", "job",
        "--storage", str(tmp_path / "storage"), "--output", str(tmp_path / "out"),
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
    ]
    job = subprocess.run(command, env=ray_head, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "succeeded" in job.stdout.lower()
    assert "best val mF1" in job.stdout
    assert (tmp_path / "out" / "best.ckpt").is_file() and (tmp_path / "out" / "metrics.json").is_file()
