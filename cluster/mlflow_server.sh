#!/usr/bin/env bash
# An MLflow tracking server for a team or a cluster (mlflow comes with h2crop's install).
#
# It listens on 127.0.0.1 unless HOST says otherwise: a tracking server open to the network accepts anyone's
# runs and serves every artifact. For other machines, put it behind an authenticating reverse proxy (and
# pass --allowed-hosts with the proxy's host name), or set HOST to this node's address on a private network
# you trust. Clients upload artifacts through the server (--serve-artifacts), so ARTIFACTS may be a folder
# here or an object store (s3://bucket/mlflow) that only the server can reach.
#
#   cluster/mlflow_server.sh                      # http://127.0.0.1:5000
#   PORT=5001 STORE=sqlite:///$PWD/team.db cluster/mlflow_server.sh --allowed-hosts mlflow.example.org
#   h2crop train ... --tracking-uri http://127.0.0.1:5000
#
# Settings (environment): HOST (127.0.0.1), PORT (5000), STORE (sqlite:///$PWD/mlflow-server.db),
# ARTIFACTS ($PWD/mlartifacts), WORKERS (1). Extra arguments go to `mlflow server`.
set -euo pipefail
STORE=${STORE:-sqlite:///$PWD/mlflow-server.db}
ARTIFACTS=${ARTIFACTS:-$PWD/mlartifacts}
exec mlflow server --backend-store-uri "$STORE" --serve-artifacts --artifacts-destination "$ARTIFACTS" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-1}" "$@"
