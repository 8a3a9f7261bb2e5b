#!/usr/bin/env bash
# The GPU check on a bare GPU machine: PyTorch, timm, einops and h5py, nothing installed, no Ray/MLflow/rasterio.
#
#   bash benchmarks/gpu_check.sh [--json PATH]             # CUDA; writes benchmarks/results/gpu_check.json
#   bash benchmarks/gpu_check.sh --smoke --json /tmp/x.json  # CPU, tiny model: checks the script itself
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh      # another interpreter (default python3)
#
# See benchmarks/gpu_check.py for what it measures.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$ROOT/benchmarks/gpu_check.py" "$@"
