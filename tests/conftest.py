"""Shared fixtures: small generated datasets and the benchmark's metadata from ../shared (when present)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from h2crop_core.data.synth import synthesize_dataset
from h2crop_core.taxonomy import Taxonomy

_BUCKETS = itertools.count()
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_taxonomy_csv() -> Path:
    """The benchmark's own taxonomy CSV, read from ../shared (never copied into the repo)."""
    path = SHARED_DATA / "cascade_labels.csv"
    if not path.is_file():
        pytest.skip(f"benchmark taxonomy not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_norm_stats() -> Path:
    path = SHARED_DATA / "h2crop_norm_stats.json"
    if not path.is_file():
        pytest.skip(f"published normalisation statistics not found at {path}")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-sample generated dataset (with a small region), shared read-only by the session's tests."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize_dataset(root, 12, seed=3, region_size=192, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_products(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synth --products`` of the session region (192 px): three S2 L2A scenes a month (two of them zipped),
    STAC ItemCollections, an EnMAP L2A product and the clean monthly truth; read-only."""
    from h2crop_core.data.synth.products import write_products

    out = tmp_path_factory.mktemp("products") / "products"
    write_products(synth_root / "region", out, scenes_per_month=3, seed=1, zipped=2, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_taxonomy(synth_root: Path) -> Taxonomy:
    return Taxonomy.from_csv(synth_root / "cascade_labels.csv")


@pytest.fixture(scope="session")
def _pristine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "data"
    synthesize_dataset(root, 6, seed=11, region_size=None, progress=False)
    return root


@pytest.fixture()
def writable_root(tmp_path: Path, _pristine_root: Path) -> Path:
    """A fresh copy of a 6-sample dataset that a test may damage."""
    return Path(shutil.copytree(_pristine_root, tmp_path / "data"))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's) on loopback for the session, and the standard AWS environment
    variables that point clients at it (pyarrow, boto3, Ray Train storage). Yields those variables."""
    import os
    import socket
    import subprocess
    import sys
    import time

    server = Path(sys.executable).parent / "moto_server"
    if not server.is_file():
        pytest.skip("moto_server not installed (pip install -e '.[dev]')")
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "h2crop-test",
        "AWS_SECRET_ACCESS_KEY": "h2crop-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on port {port}")
                time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_server, request) -> str:
    """A new, empty bucket on the session's S3 server: its ``s3://`` URI."""
    import re

    import boto3

    name = f"{re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())[:40].strip('-')}-{next(_BUCKETS)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"
