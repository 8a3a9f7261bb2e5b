#!/usr/bin/env bash
# A two-node Ray cluster on this machine, for trying `ray job submit` and multi-node behaviour before a
# real cluster: the head on 127.0.0.2 (dashboard and job API at http://127.0.0.2:8265), a worker node on
# 127.0.0.3, each with its own temp dir. Distinct loopback addresses keep the two nodes apart (with
# 127.0.0.1 Ray would see one machine); nothing listens beyond loopback.
#
#   cluster/local.sh up       start both nodes (from the project's venv, so jobs find `h2crop`)
#   cluster/local.sh env      print the export lines a shell needs to submit:  eval "$(cluster/local.sh env)"
#   cluster/local.sh status   the nodes and their resources
#   cluster/local.sh down     stop this cluster's processes only (other Rays on the machine keep running)
#
# Settings (environment): CPUS per node (2), HEAD_IP (127.0.0.2), WORKER_IP (127.0.0.3), PORT (6390),
# DASHBOARD_PORT (8265), RAY_AUTH_MODE (disabled: loopback only; every process must agree), H2CROP_CLUSTER_DIR
# (/tmp/h2crop-cluster-$USER: short, Ray's socket paths have a length limit), VENV (the repo's .venv).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
CPUS=${CPUS:-2}
HEAD_IP=${HEAD_IP:-127.0.0.2}
WORKER_IP=${WORKER_IP:-127.0.0.3}
PORT=${PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
ROOT=${H2CROP_CLUSTER_DIR:-/tmp/h2crop-cluster-${USER:-$(id -un)}}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export RAY_USAGE_STATS_ENABLED=0
# the head's PATH is the jobs' PATH: `h2crop` and `python` come from the project's environment
if [[ -x "$VENV/bin/ray" ]]; then export PATH="$VENV/bin:$PATH"; fi
command -v ray >/dev/null || { echo "local.sh: no 'ray' on PATH and none in $VENV (run 'make install' first)" >&2; exit 2; }

# Each node is started in its own session (setsid), which every process it starts inherits (GCS, raylet,
# dashboard and its children, workers); `down` stops those sessions only. `ray stop` would stop every Ray
# of this user on the machine.
sessions() { cat "$ROOT/sessions" 2>/dev/null || true; }
# live processes of those sessions (a zombie is already dead: it only waits for a parent to reap it)
own_pids() {
  local ids; ids=$(sessions | paste -sd, -)
  [[ -n "$ids" ]] && ps -e -o pid=,sid=,stat= | awk -v ids=",$ids," 'index(ids, "," $2 ",") && $3 !~ /^Z/ {print $1}' || true
}
start_node() {  # ray start ... in a new session; its id is recorded for `down`
  setsid --wait bash -c 'echo $$ >>"$0/sessions"; exec "$@"' "$ROOT" ray start "$@" >>"$ROOT/up.log" 2>&1
}

up() {
  if [[ -n "$(own_pids)" ]]; then echo "local.sh: a cluster is already running from $ROOT ($0 status; $0 down)" >&2; exit 1; fi
  rm -rf "$ROOT"; mkdir -p "$ROOT/head" "$ROOT/node2"
  start_node --head --node-ip-address="$HEAD_IP" --port="$PORT" --num-cpus="$CPUS" --temp-dir="$ROOT/head" \
    --include-dashboard=true --dashboard-host="$HEAD_IP" --dashboard-port="$DASHBOARD_PORT" --disable-usage-stats \
    || { cat "$ROOT/up.log" >&2; down >/dev/null; exit 1; }
  start_node --address="$HEAD_IP:$PORT" --node-ip-address="$WORKER_IP" --num-cpus="$CPUS" --temp-dir="$ROOT/node2" \
    --disable-usage-stats || { cat "$ROOT/up.log" >&2; down >/dev/null; exit 1; }
  echo "local Ray cluster up: head $HEAD_IP:$PORT, worker node $WORKER_IP, $CPUS CPUs each; dashboard http://$HEAD_IP:$DASHBOARD_PORT"
  echo "submit from a shell with:  eval \"\$($0 env)\"; ray job submit --working-dir . -- h2crop train ..."
}

env_lines() {
  echo "export RAY_ADDRESS=http://$HEAD_IP:$DASHBOARD_PORT"
  echo "export RAY_AUTH_MODE=$RAY_AUTH_MODE"
}

status() {
  if [[ -z "$(own_pids)" ]]; then echo "local.sh: no cluster running from $ROOT"; exit 1; fi
  ray status --address="$HEAD_IP:$PORT"
}

down() {
  local pids tries=0
  pids=$(own_pids)
  if [[ -n "$pids" ]]; then
    kill $pids 2>/dev/null || true  # SIGTERM: raylets stop their workers
    while [[ -n "$(own_pids)" && $tries -lt 25 ]]; do sleep 0.2; tries=$((tries + 1)); done
    pids=$(own_pids)
    if [[ -n "$pids" ]]; then kill -9 $pids 2>/dev/null || true; fi
  fi
  # `ray start` records the head's address here; a stale record would send the next local Ray to a dead cluster
  local record=/tmp/ray/ray_current_cluster
  if [[ -f "$record" ]] && grep -q "$HEAD_IP:$PORT" "$record"; then rm -f "$record"; fi
  rm -rf "$ROOT"
  echo "local Ray cluster down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
