#!/usr/bin/env bash
# A local distributed cluster on loopback, from the release build:
# redis-server, 2 room replicas and 2 edges.
#
#   deploy/local/cluster.sh start    build, start everything, print the URLs
#   deploy/local/cluster.sh stop     stop everything it started
#   deploy/local/cluster.sh status   what is running
#
# Ports (override with the environment; defaults stay below the kernel's ephemeral
# range): REDIS_PORT=16390, ROOM_PORTS="15061 15062",
# EDGE_PORTS="18081 18082"; each process's admin port (/metrics, /livez,
# /readyz) is its port + 1000 (rooms 16061 16062, edges 19081 19082).
# SWITCHBOARD_BIN runs another build (nothing is built then).
# Logs and pids go to $CLUSTER_DIR (default
# target/local-cluster). Extra edge flags: EDGE_ARGS (default "--ice-server none").
# Every process runs one runtime thread (SWITCHBOARD_WORKER_THREADS, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PORT=${REDIS_PORT:-16390}
ROOM_PORTS=${ROOM_PORTS:-"15061 15062"}
EDGE_PORTS=${EDGE_PORTS:-"18081 18082"}
EDGE_ARGS=${EDGE_ARGS:-"--ice-server none"}
CLUSTER_DIR=${CLUSTER_DIR:-target/local-cluster}
# Five processes share this machine's cores: one runtime thread each is the
# cheapest per message (no cross-thread wake-ups). Override to compare.
export SWITCHBOARD_WORKER_THREADS=${SWITCHBOARD_WORKER_THREADS:-1}
BIN=${SWITCHBOARD_BIN:-target/release/switchboard}

wait_for_port() { # port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2 on port $1 (see $CLUSTER_DIR)" >&2
  return 1
}

start_bg() { # name command...
  local name=$1; shift
  "$@" >"$CLUSTER_DIR/$name.log" 2>&1 &
  echo $! >"$CLUSTER_DIR/$name.pid"
}

start() {
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p "$CLUSTER_DIR"
  if ls "$CLUSTER_DIR"/*.pid >/dev/null 2>&1; then
    echo "already running? run '$0 stop' first" >&2; exit 1
  fi
  [ -n "${SWITCHBOARD_BIN:-}" ] || cargo build --release --quiet
  start_bg redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
  wait_for_port "$REDIS_PORT" redis
  local rooms=() i=1
  for port in $ROOM_PORTS; do
    start_bg "room$i" "$BIN" room --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1000))" \
      --redis "redis://127.0.0.1:$REDIS_PORT/"
    wait_for_port "$port" "room $i"
    rooms+=("127.0.0.1:$port"); i=$((i + 1))
  done
  local room_list
  room_list=$(IFS=,; echo "${rooms[*]}")
  i=1
  for port in $EDGE_PORTS; do
    # shellcheck disable=SC2086
    start_bg "edge$i" "$BIN" edge --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1000))" \
      --room "$room_list" $EDGE_ARGS
    wait_for_port "$port" "edge $i"
    echo "edge $i: http://127.0.0.1:$port/  (ws://127.0.0.1:$port/ws, metrics http://127.0.0.1:$((port + 1000))/metrics)"
    i=$((i + 1))
  done
  echo "rooms: $room_list   redis: 127.0.0.1:$REDIS_PORT   logs: $CLUSTER_DIR"
}

stop() {
  local pids=()
  for f in "$CLUSTER_DIR"/edge*.pid "$CLUSTER_DIR"/room*.pid "$CLUSTER_DIR"/redis.pid; do
    [ -f "$f" ] || continue
    local pid; pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "stopped ${#pids[@]} processes"
}

status() {
  for f in "$CLUSTER_DIR"/*.pid; do
    [ -f "$f" ] || { echo "not running"; return; }
    local name; name=$(basename "$f" .pid)
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$name: running"; else echo "$name: dead"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
