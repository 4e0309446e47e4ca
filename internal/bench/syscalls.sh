#!/usr/bin/env bash
# syscalls.sh: what one operation costs the servers in system calls and
# context switches, for 1 and 3 groups on the same three nodes. For each
# of GROUPS_LIST, starts `shardkv dev --groups G`, loads KEYS keys, and runs
# `shardkv bench` (WORKLOAD, CLIENTS, OPS) under `perf stat` of the six
# server processes; prints the bench line and the counts. Needs perf
# (Debian: linux-perf) and root.
#
#   internal/bench/syscalls.sh                 # 1 and 3 groups, puts, 64 clients
#   SKV_BIN=/tmp/skv WORKLOAD=C internal/bench/syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
GROUPS_LIST=${GROUPS_LIST:-1,3}
WORKLOAD=${WORKLOAD:-W}
CLIENTS=${CLIENTS:-64}
OPS=${OPS:-20000}
KEYS=${KEYS:-10000}
PORT=24000
CTLS=127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))
EVENTS=syscalls:sys_enter_fdatasync,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_futex,context-switches
W=$(mktemp -d)
DEV=
cleanup() {
  if [ -n "$DEV" ]; then kill "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
BIN=${SKV_BIN:-$W/shardkv}
[ -n "${SKV_BIN:-}" ] || go build -o "$BIN" ./cmd/shardkv
for g in ${GROUPS_LIST//,/ }; do
  rm -rf "$W/data"
  "$BIN" dev --groups "$g" --data "$W/data" --base-port $PORT >"$W/dev.log" 2>&1 &
  DEV=$!
  for _ in $(seq 1 120); do
    [ "$(grep -c "installed configuration" "$W/dev.log" || true)" -ge "$g" ] && break
    sleep 1
  done
  pids=$(pgrep -P "$DEV" | paste -sd, -)
  "$BIN" bench --controllers "$CTLS" --workload W --ops 1 --keys "$KEYS" --load >/dev/null 2>&1
  perf stat -e "$EVENTS" -p "$pids" -o "$W/perf.txt" &
  PERF=$!
  echo "== $g groups"
  "$BIN" bench --controllers "$CTLS" --workload "$WORKLOAD" --clients "$CLIENTS" --ops "$OPS" --duration 120s \
    --keys "$KEYS" --server-pids "$pids" 2>&1 | tail -1
  kill -INT "$PERF"; wait "$PERF" || true
  grep -E "syscalls|context" "$W/perf.txt"
  kill "$DEV"; wait "$DEV" 2>/dev/null || true; DEV=
done
