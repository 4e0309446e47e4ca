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
for _ in $(seq 1 120); do
	[ "$(grep -c "installed configuration" "$D/log" || true)" -ge $((G * 3)) ] && break
	sleep 1
done
sleep 10
PIDS=$(pgrep -P $DEV | tr '\n' ' ')
cpu() { awk '{print $14+$15}' /proc/"$1"/stat; }
declare -A before
for p in $PIDS; do before[$p]=$(cpu "$p"); done
sleep 30
hz=$(getconf CLK_TCK)
for p in $PIDS; do
	echo "$(ps -o args= -p "$p" | cut -d' ' -f2-3) $(( ($(cpu "$p") - ${before[$p]}) * 1000 / hz )) ms CPU in 30 s"
done
