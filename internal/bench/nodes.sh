#!/usr/bin/env bash
# nodes.sh: the cost of groups on the same three nodes. For each of GROUPS
# (default 1,3), starts `shardkv dev --groups G` (three controller
# processes, three `shardkv server` nodes each hosting one replica of every
# group), loads KEYS keys, and runs `shardkv bench` for each workload and
# client count; server CPU per operation is all six processes' (from
# /proc, by bench --server-pids). Rounds interleave the group counts so
# machine noise hits them alike. Prints one line per run; JSON in $OUT.
#
#   internal/bench/nodes.sh                                  # 1 and 3 groups, W and C, 64 clients
#   GROUPS_LIST=1,3,9 CLIENTS=256 ROUNDS=2 internal/bench/nodes.sh
#   SYSCALLS=1 WARMUP=0s ROUNDS=1 WORKLOADS=W internal/bench/nodes.sh  # also count system calls
#
# SYSCALLS=1 runs each bench under `perf stat` of the six server processes
# (fdatasync, write, read, futex, context switches; needs perf, Debian's
# linux-perf, and root) and prints the counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
GROUPS_LIST=${GROUPS_LIST:-1,3}
CLIENTS=${CLIENTS:-64}
WORKLOADS=${WORKLOADS:-W,C}
OPS=${OPS:-20000}
KEYS=${KEYS:-10000}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$(mktemp -d)}
SYSCALLS=${SYSCALLS:-}
WARMUP=${WARMUP:-2s}
EVENTS=syscalls:sys_enter_fdatasync,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_futex,context-switches
PORT=24000
CTLS=127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))
W=$(mktemp -d)
DEV=
cleanup() {
  if [ -n "$DEV" ]; then kill "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
BIN=${SKV_BIN:-$W/shardkv}
[ -n "${SKV_BIN:-}" ] || go build -o "$BIN" ./cmd/shardkv
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
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
    for w in ${WORKLOADS//,/ }; do
      for c in ${CLIENTS//,/ }; do
        f="$OUT/g$g-$w-$c-r$round.json"
        PERF=
        if [ -n "$SYSCALLS" ]; then
          perf stat -e "$EVENTS" -p "$pids" -o "$f.perf" &
          PERF=$!
        fi
        "$BIN" bench --controllers "$CTLS" --workload "$w" --clients "$c" --ops "$OPS" --duration 120s \
          --warmup "$WARMUP" --keys "$KEYS" --server-pids "$pids" -o json >"$f" 2>>"$W/bench.log"
        python3 - "$f" "$g" "$w" "$c" "$round" <<'PY'
import json, sys
f, g, w, c, r = sys.argv[1:]
d = json.load(open(f))
runs = d if isinstance(d, list) else d.get("runs", [d])
for run in runs:
    p99 = run["latency"].get("put", run["latency"].get("get", {})).get("p99_ms", 0)
    print(f"round {r} groups {g} workload {w} clients {c}: {run['ops_per_second']:.0f} ops/s, "
          f"server CPU {run['server_cpu_us_per_op']:.1f} us/op, p99 {p99:.1f} ms")
PY
        if [ -n "$PERF" ]; then
          kill -INT "$PERF"; wait "$PERF" || true
          grep -E "syscalls|context" "$f.perf"
        fi
      done
    done
    kill "$DEV"; wait "$DEV" 2>/dev/null || true; DEV=
  done
done
echo "JSON in $OUT"
