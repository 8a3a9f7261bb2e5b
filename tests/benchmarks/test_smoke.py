"""Every benchmark runs in ``--smoke`` mode (tiny sizes), so none can rot unnoticed: each prints its table and
writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.conftest import ray_local  # noqa: F401  (the session's local Ray, shared with the benchmarks)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))
#: smoke-run elsewhere: test_gpu_check.py runs gpu_check.py through its shell wrapper, without Ray
ELSEWHERE = {"gpu_check.py"}


def test_every_benchmark_is_covered():
    assert set(SCRIPTS) >= {
        "attention_kernels.py",
        "composite_throughput.py",
        "data_read.py",
        "learning.py",
        "mapping_throughput.py",
        "model_speed.py",
        "train_throughput.py",
    }
    for script in SCRIPTS:
        assert "--smoke" in (BENCHMARKS / script).read_text(), f"{script} has no --smoke mode"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in ELSEWHERE])
def test_benchmark_runs_in_smoke_mode(script, tmp_path, ray_local):  # noqa: F811
    output = tmp_path / "result.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(BENCHMARKS.parent),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        # the session's Ray rather than one of its own: a Ray start and stop less per benchmark, and never two
        # local Rays on the two cores (mapping_throughput and composite_throughput still start their own in
        # their worker processes: what they measure)
        "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
    }  # each Train run notices its end sooner (default: a 2 s poll)
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert output.is_file(), f"{script} --smoke wrote no JSON"
    payload = json.loads(output.read_text())
    assert payload, f"{script} wrote an empty result"
    assert f"wrote {output}" in done.stdout
