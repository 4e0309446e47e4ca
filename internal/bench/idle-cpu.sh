#!/bin/bash
# idle-cpu.sh: the CPU an idle cluster costs. Starts `shardkv dev --groups
# GROUPS` (three controller processes, three nodes), waits until every
# replica installed the first configuration, then prints the CPU time
# (user + system, from /proc/PID/stat) each process used over 30 s.
#
#   internal/bench/idle-cpu.sh [BIN] [GROUPS]     (defaults: a fresh build, 30)
set -euo pipefail
BIN=${1:-}
G=${2:-30}
D=$(mktemp -d)
if [ -z "$BIN" ]; then
	BIN=$D/shardkv
	go build -o "$BIN" ./cmd/shardkv
fi
"$BIN" dev --groups "$G" --data "$D/data" --base-port 23000 >"$D/log" 2>&1 &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$D"' EXIT
# Each group's leader logs its first configuration once.
up=false
for _ in $(seq 1 120); do
	if [ "$(grep -c "installed configuration" "$D/log" || true)" -ge "$G" ]; then
		up=true
		break
	fi
	sleep 1
done
if ! $up; then
	echo "idle-cpu: the cluster did not come up in 120 s; its log:" >&2
	tail -20 "$D/log" >&2
	exit 1
fi
sleep 10
PIDS=$(pgrep -P $DEV | tr '\n' ' ' || true)
if [ -z "$PIDS" ]; then
	echo "idle-cpu: dev started no processes" >&2
	exit 1
fi
cpu() { awk '{print $14+$15}' /proc/"$1"/stat; }
declare -A before
for p in $PIDS; do before[$p]=$(cpu "$p"); done
sleep 30
hz=$(getconf CLK_TCK)
for p in $PIDS; do
	echo "$(ps -o args= -p "$p" | cut -d' ' -f2-3) $(( ($(cpu "$p") - ${before[$p]}) * 1000 / hz )) ms CPU in 30 s"
done
