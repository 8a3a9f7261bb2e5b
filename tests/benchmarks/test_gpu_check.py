"""The GPU check runs on a machine without Ray, MLflow or rasterio: its shell wrapper, in ``--smoke`` mode, with
those imports made to fail, still measures both variants at both batch sizes and passes the decode check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: what a bare GPU machine lacks (the last two are kept out too: they are what pulls in the rest)
BLOCKED = ("ray", "mlflow", "rasterio", "pyarrow", "matplotlib")
BLOCKER = f'''
import sys

class _Blocked:
    """A meta-path finder that refuses the packages a bare GPU machine lacks."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked: the GPU machine does not have it")
        return None

sys.meta_path.insert(0, _Blocked())
'''


def test_gpu_check_smoke_runs_without_ray_mlflow_rasterio(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    blocked = subprocess.run([sys.executable, "-c", "import rasterio"], capture_output=True, text=True, env=env)
    assert blocked.returncode != 0 and "is blocked" in blocked.stderr, "the import blocker is not active"

    output = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--smoke",
            "--taxonomy",
            "generated",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, f"gpu_check.sh --smoke failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert f"wrote {output}" in done.stdout
    result = json.loads(output.read_text())
    assert result["ok"] is True and result["errors"] == []
    rows = {(row["variant"], row["batch"]): row for row in result["training"]}
    assert set(rows) == {(variant, batch) for variant in ("sdpa_bf16", "plain_fp32") for batch in (1, 2)}
    assert all(row["status"] == "ok" and row["median_s"] > 0 and row["train_tflop_per_s"] > 0 for row in rows.values())
    assert rows["sdpa_bf16", 2]["speedup_vs_baseline"] > 0
    assert result["matmul"]["tflop_per_s"] > 0
    assert result["decode"]["passed"] is True and result["decode"]["taxonomy"] == "generated"
    assert all(result["decode"]["checks"].values())
