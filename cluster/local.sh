#!/usr/bin/env bash
# A two-node Ray cluster on this machine (distinct loopback addresses), with the dashboard for
# `ray job submit`. Run from the activated venv so the head's PATH has `h2crop`.
#   cluster/local.sh start   |   cluster/local.sh stop
set -euo pipefail
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # every process (CLI, driver, nodes) must agree
CPUS=${CPUS:-2}
case "${1:-start}" in
  start)
    ray start --head --node-ip-address=127.0.0.2 --port=6390 --num-cpus="$CPUS" \
      --include-dashboard=true --dashboard-host=127.0.0.2 --dashboard-port=8265 --disable-usage-stats
    ray start --address=127.0.0.2:6390 --node-ip-address=127.0.0.3 --num-cpus="$CPUS" \
      --temp-dir="${TMPDIR:-/tmp}/ray-node2" --disable-usage-stats
    echo "submit with: RAY_AUTH_MODE=$RAY_AUTH_MODE ray job submit --address http://127.0.0.2:8265 --working-dir . -- h2crop train ..."
    ;;
  stop)
    ray stop
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2;;
esac
