#!/usr/bin/env bash
# An MLflow tracking server (needs the full `mlflow`: pip install -e ".[server]").
# It listens on 127.0.0.1 unless told otherwise: a tracking server open to the network accepts anyone's runs
# and serves every artifact. For other nodes, put it behind an authenticating proxy, or set HOST to this
# node's address on a private network you trust. Point training at it with:
#   h2crop train ... --tracking-uri http://<host>:5000
set -euo pipefail
STORE=${STORE:-sqlite:///$PWD/mlflow-server.db}
ARTIFACTS=${ARTIFACTS:-$PWD/mlartifacts}
exec mlflow server --backend-store-uri "$STORE" --default-artifact-root "$ARTIFACTS" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-1}"
