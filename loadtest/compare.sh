#!/usr/bin/env bash
# Two builds side by side under the same load: runs them in turn, ROUNDS times,
# on the standalone and the distributed closed loop (C=50; the distributed one
# on deploy/local/cluster.sh with one room replica), and prints sessions/s, p99
# session time and server CPU per 1,000 sessions of each run. This machine's
# speed drifts within the hour: only runs taken in turn compare.
#   Usage: loadtest/compare.sh OLD_BINARY NEW_BINARY [ROUNDS]   (DURATION=8s)
#   e.g.   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && cargo build --release -p switchboard)
#          loadtest/compare.sh /tmp/old/target/release/switchboard target/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-3}
DURATION=${DURATION:-8s}
PORT=${STANDALONE_PORT:-18091}
export SWITCHBOARD_WORKER_THREADS=${SWITCHBOARD_WORKER_THREADS:-1}
export CLUSTER_DIR=target/compare-cluster ROOM_PORTS=15061
export EDGE_ARGS="--ice-server none --max-messages-per-sec 0"
LOADTEST=target/release/loadtest
cargo build --release --locked --quiet -p loadtest

server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  deploy/local/cluster.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# One line from the loader's report: rate, p99 session time, CPU per 1,000.
summary() {
  awk '/^sessions / {rate = $NF; gsub(/[()]/, "", rate); failed = $4}
       /^session time/ {p99 = $10 " " $11}
       /^server CPU/ {cpu = $3}
       END {printf "%10s  p99 %-10s  %s CPU-s/1000  (%s failed)\n", rate, p99, cpu, failed}'
}

standalone() { # binary
  "$1" standalone --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --ice-server none \
    --max-messages-per-sec 0 --log-format json 2>/dev/null &
  server_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  "$LOADTEST" --edge "ws://127.0.0.1:$PORT/ws" --concurrency 50 --duration "$DURATION" --pid "$server_pid" 2>/dev/null | summary
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

distributed() { # binary
  SWITCHBOARD_BIN=$1 deploy/local/cluster.sh start >/dev/null
  local pids=() f
  for f in "$CLUSTER_DIR"/*.pid; do pids+=(--pid "$(cat "$f")"); done
  "$LOADTEST" --edge ws://127.0.0.1:18081/ws --edge ws://127.0.0.1:18082/ws \
    --concurrency 50 --duration "$DURATION" "${pids[@]}" 2>/dev/null | summary
  deploy/local/cluster.sh stop >/dev/null
}

echo "old: $OLD"
echo "new: $NEW"
for round in $(seq 1 "$ROUNDS"); do
  for mode in standalone distributed; do
    for build in old new; do
      binary=$OLD; [ "$build" = new ] && binary=$NEW
      printf 'round %s  %-11s  %s ' "$round" "$mode" "$build"
      "$mode" "$binary"
    done
  done
done
