#!/usr/bin/env bash
# The published benchmark: builds release, runs the loadtest scenarios against
# the standalone server and against the local cluster (Redis + 1 room replica
# + 2 edges, deploy/local/cluster.sh), writes loadtest/results/REPORT.md, and
# stops everything it started.
#   Usage: loadtest/bench.sh   (DURATION=10s IDLE=10000 IDLE_MAX=100000)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
IDLE=${IDLE:-10000}
IDLE_MAX=${IDLE_MAX:-100000}
# The load generator and every server process share the machine's cores: one
# runtime thread per server process is the cheapest per message there.
export SWITCHBOARD_WORKER_THREADS=${SWITCHBOARD_WORKER_THREADS:-1}
RESULTS=loadtest/results
STANDALONE_PORT=${STANDALONE_PORT:-18090}
mkdir -p "$RESULTS"
BIN=target/release/switchboard
LOADTEST=target/release/loadtest

cargo build --release --locked -p switchboard -p loadtest
# Many idle connections need many descriptors (server and loader alike): raise
# the limit as far as this machine lets us. Without the privilege to raise the
# hard limit, the most-connections run holds as many as fit under it.
ulimit -Hn "$((IDLE_MAX + 4096))" 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
idle_max=$IDLE_MAX
[ "$fd_limit" != unlimited ] && [ "$fd_limit" -lt $((IDLE_MAX + 1024)) ] && idle_max=$((fd_limit - 1024))

standalone_pid=
cleanup() {
  [ -n "$standalone_pid" ] && kill -TERM "$standalone_pid" 2>/dev/null && wait "$standalone_pid" 2>/dev/null || true
  deploy/local/cluster.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

report=$RESULTS/REPORT.md
{
  echo "# Switchboard benchmark"
  echo
  echo "Produced by \`loadtest/bench.sh\` on $(date -u +%Y-%m-%dT%H:%MZ). The load generator and"
  echo "every server process share this machine:"
  echo
  echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "- memory: $(free -h | awk '/Mem:/ {print $2}')"
  echo "- kernel: $(uname -r); $(rustc --version)"
  echo "- workload: caller joins, ~4.5 KB offer, 4 candidates; callee joins (later, other edge when"
  echo "  there are two), sees the offer with its candidates, ~3.6 KB answer, 4 candidates; every"
  echo "  payload validated. Rate limits off (\`--max-messages-per-sec 0\`). Every server process"
  echo "  runs one runtime thread (\`SWITCHBOARD_WORKER_THREADS=$SWITCHBOARD_WORKER_THREADS\`)."
  echo "- open-files limit: $fd_limit"
  echo
} >"$report"

run() { # title, loadtest args...
  local title=$1; shift
  echo "==> $title" >&2
  {
    echo "## $title"
    echo
    echo '```'
    echo "loadtest $*"
    "$LOADTEST" "$@" --json "$RESULTS/$(echo "$title" | tr ' /,=' '____').json" 2>/dev/null || echo "(some sessions failed)"
    echo '```'
    echo
  } >>"$report"
}

# Waits (up to a minute) until the local cluster has let go of the previous
# scenario's connections: its edges hold none and its room replica has
# unsubscribed them all (ten thousand idle sessions take a while to clean up,
# and a scenario started meanwhile would measure the clean-up).
settle() {
  local metric value busy
  for _ in $(seq 1 600); do
    busy=0
    for metric in 19081:switchboard_connections_open 19082:switchboard_connections_open \
      16061:switchboard_pubsub_subscriptions; do
      value=$(curl -s "http://127.0.0.1:${metric%%:*}/metrics" | awk -v m="${metric#*:}" '$1 == m {print $2}')
      [ "${value:-1}" = 0 ] || busy=1
    done
    [ "$busy" = 0 ] && return 0
    sleep 0.1
  done
  echo "the cluster did not settle within a minute" >&2
}

# --- standalone ---------------------------------------------------------------
"$BIN" standalone --listen "127.0.0.1:$STANDALONE_PORT" --admin-listen 127.0.0.1:0 --ice-server none --max-messages-per-sec 0 \
  --log-format json 2>"$RESULTS/standalone.log" &
standalone_pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$STANDALONE_PORT") 2>/dev/null && break; sleep 0.1; done
ws="ws://127.0.0.1:$STANDALONE_PORT/ws"
run "standalone closed loop C=50" --edge "$ws" --concurrency 50 --duration "$DURATION" --pid "$standalone_pid"
run "standalone one session at a time" --edge "$ws" --concurrency 1 --duration 5s --pid "$standalone_pid"
run "standalone idle $IDLE" --edge "$ws" --idle "$IDLE" --hold 5s --pid "$standalone_pid"
kill -TERM "$standalone_pid"; wait "$standalone_pid" 2>/dev/null || true; standalone_pid=

# --- distributed --------------------------------------------------------------
ROOM_PORTS=15061 EDGE_ARGS="--ice-server none --max-messages-per-sec 0" deploy/local/cluster.sh start >&2
pids=()
for f in target/local-cluster/*.pid; do pids+=(--pid "$(cat "$f")"); done
edges=(--edge ws://127.0.0.1:18081/ws --edge ws://127.0.0.1:18082/ws)
run "distributed closed loop C=50" "${edges[@]}" --concurrency 50 --duration "$DURATION" "${pids[@]}"
settle
run "distributed one session at a time" "${edges[@]}" --concurrency 1 --duration 5s "${pids[@]}"
settle
run "distributed idle $IDLE" "${edges[@]}" --idle "$IDLE" --hold 5s "${pids[@]}"
settle
run "distributed step to SLO p99 50ms" "${edges[@]}" --step-to-slo --slo-p99 50ms --start-rate 200 --step-rate 200 --duration 3s
settle
run "distributed churn 500 per s" "${edges[@]}" --churn 500 --duration 5s "${pids[@]}"
settle
if [ "$idle_max" -lt "$IDLE_MAX" ]; then
  {
    echo "## one edge idle $IDLE_MAX"
    echo
    echo "Not attempted: this machine's open-files limit is $fd_limit and cannot be raised"
    echo "(\`ulimit -Hn\` needs privileges this run lacks); the run below holds $idle_max instead."
    echo
  } >>"$report"
fi
run "one edge idle $idle_max" --edge ws://127.0.0.1:18081/ws --idle "$idle_max" --hold 10s --timeout 60s --pid "$(cat target/local-cluster/edge1.pid)"
deploy/local/cluster.sh stop >&2

echo "wrote $report" >&2
