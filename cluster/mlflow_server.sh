#!/usr/bin/env bash
# An MLflow tracking server every node can reach (needs the full `mlflow`: pip install -e ".[server]").
# Point training at it with: h2crop train ... --tracking-uri http://<this host>:5000
set -euo pipefail
STORE=${STORE:-sqlite:///$PWD/mlflow-server.db}
ARTIFACTS=${ARTIFACTS:-$PWD/mlartifacts}
exec mlflow server --backend-store-uri "$STORE" --default-artifact-root "$ARTIFACTS" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-5000}" --workers "${WORKERS:-1}"
