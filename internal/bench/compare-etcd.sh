#!/usr/bin/env bash
# Runs shardkv and etcd side by side on this machine and prints the ratios.
#
#   internal/bench/compare-etcd.sh                     # defaults below
#   OPS=50000 CLIENTS=64,256 ROUNDS=3 internal/bench/compare-etcd.sh
#   STAGES= CLIENTS=64 ROUNDS=1 OUT=/tmp/r internal/bench/compare-etcd.sh   # one group against etcd only
#
# Both stores run as separate processes on loopback with 3 replicas: etcd as
# a 3-member cluster; shardkv as 3 controller processes plus one group of 3
# server processes, then three groups of 3. The same load generator
# (`shardkv bench`, closed loop, linearizable gets on both) drives both, and
# runs alternate between the two stores so machine noise hits both alike.
# Then: memory and disk per key after loading FOOTPRINT_KEYS keys, and the
# time from a leader's kill -9 to the first successful write. Every process
# the script starts is stopped on exit. Results land in $OUT (JSON per run
# and summary.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."

OPS=${OPS:-20000}
CLIENTS=${CLIENTS:-16,64,256}
WORKLOADS=${WORKLOADS:-W,C}
VALUE=${VALUE:-256}
KEYS=${KEYS:-10000}
ROUNDS=${ROUNDS:-2}
FOOTPRINT_KEYS=${FOOTPRINT_KEYS:-100000}
OUT=${OUT:-internal/bench/results}
STAGES=${STAGES-failover,3g,footprint} # besides one group against etcd

if ! command -v etcd >/dev/null; then
  echo "installing Debian's etcd-server"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
declare -A PID_OF_PORT=()
ALL_PIDS=()
cleanup() {
  for p in "${ALL_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
go build -o "$WORK/shardkv" ./cmd/shardkv
SKV="$WORK/shardkv"

ETCD_EPS=127.0.0.1:22379,127.0.0.1:22479,127.0.0.1:22579
start_etcd() {
  local cluster="e1=http://127.0.0.1:22380,e2=http://127.0.0.1:22480,e3=http://127.0.0.1:22580"
  for i in 1 2 3; do
    local c=$((22279 + 100 * i)) p=$((22280 + 100 * i))
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$WORK/etcd$i.log" 2>&1 &
    ALL_PIDS+=($!); PID_OF_PORT[$c]=$!
  done
}

CTLS=127.0.0.1:27100,127.0.0.1:27101,127.0.0.1:27102
SKV_PIDS=()
start_shardkv() { # $1 = number of groups
  rm -rf "$WORK/skv"; SKV_PIDS=()
  for i in 1 2 3; do
    "$SKV" controller --id $i --listen 127.0.0.1:$((27099 + i)) --data "$WORK/skv/c$i" \
      --peers 1=127.0.0.1:27100,2=127.0.0.1:27101,3=127.0.0.1:27102 --log-level warn >"$WORK/c$i.log" 2>&1 &
    ALL_PIDS+=($!); SKV_PIDS+=($!); PID_OF_PORT[$((27099 + i))]=$!
  done
  local joins=()
  for g in $(seq 1 "$1"); do
    local base=$((27100 + 10 * g)) peers=""
    for i in 1 2 3; do peers+="${peers:+,}$i=127.0.0.1:$((base + i))"; done
    for i in 1 2 3; do
      "$SKV" server --group "$g" --id $i --listen 127.0.0.1:$((base + i)) --data "$WORK/skv/g$g-$i" \
        --peers "$peers" --controllers "$CTLS" --log-level warn >"$WORK/g$g-$i.log" 2>&1 &
      ALL_PIDS+=($!); SKV_PIDS+=($!); PID_OF_PORT[$((base + i))]=$!
    done
    joins+=("$g=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))")
  done
  # The controller checks every replica of a join: wait until they serve.
  local tries=0
  until "$SKV" admin join "${joins[@]}" --controllers "$CTLS" --timeout 10s >/dev/null 2>"$WORK/join.err"; do
    tries=$((tries + 1))
    if [ $tries -ge 30 ]; then cat "$WORK/join.err" >&2; return 1; fi
    sleep 1
  done
}
stop_shardkv() {
  for p in "${SKV_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SKV_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# cpu_ticks: user+system CPU of processes, in clock ticks (/proc/PID/stat
# fields 14 and 15).
cpu_ticks() { local t=0; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

bench() { # target label workload clients -> one JSON file, and the servers' CPU ticks beside it
  local target=$1 label=$2 w=$3 c=$4 pids
  local args=(--workload "$w" --clients "$c" --ops "$OPS" --duration 120s --warmup 2s --keys "$KEYS" --value-size "$VALUE" -o json)
  if [ "$target" = etcd ]; then
    args+=(--target etcd --endpoints "$ETCD_EPS"); pids=("${PID_OF_PORT[22379]}" "${PID_OF_PORT[22479]}" "${PID_OF_PORT[22579]}")
  else
    args+=(--controllers "$CTLS"); pids=("${SKV_PIDS[@]}")
  fi
  local before; before=$(cpu_ticks "${pids[@]}")
  "$SKV" bench "${args[@]}" >"$OUT/$label-$w-$c-r$round.json" 2>>"$WORK/bench.log"
  echo $(( $(cpu_ticks "${pids[@]}") - before )) >"$OUT/$label-$w-$c-r$round.cpu"
}

rss_kb() { local t=0; for p in "$@"; do t=$((t + $(ps -o rss= -p "$p" 2>/dev/null || echo 0))); done; echo $t; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; etcd $(etcd --version | head -1 | awk '{print $3}')"
start_etcd
start_shardkv 1
sleep 2
"$SKV" bench --target etcd --endpoints "$ETCD_EPS" --workload W --ops 1 --keys "$KEYS" --value-size "$VALUE" --load >/dev/null 2>&1
"$SKV" bench --controllers "$CTLS" --workload W --ops 1 --keys "$KEYS" --value-size "$VALUE" --load >/dev/null 2>&1
for round in $(seq 1 "$ROUNDS"); do
  for w in ${WORKLOADS//,/ }; do
    for c in ${CLIENTS//,/ }; do
      echo "round $round: workload $w, $c clients"
      bench etcd etcd "$w" "$c"
      bench shardkv shardkv-1g "$w" "$c"
    done
  done
done

if [[ ",$STAGES," == *,failover,* ]]; then
# Failover: kill -9 the leader, time the first successful write.
for target in etcd shardkv; do
  if [ $target = etcd ]; then sel=(--target etcd --endpoints "$ETCD_EPS"); else sel=(--controllers "$CTLS"); fi
  leader=$("$SKV" bench "${sel[@]}" --leader)
  port=${leader##*:}
  kill -9 "${PID_OF_PORT[$port]}"
  took=$("$SKV" bench "${sel[@]}" --first-write)
  echo "$target: first write ${took}s after kill -9 of the leader at $leader" | tee "$OUT/failover-$target.txt"
done
fi
stop_shardkv
for p in "${ALL_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
ALL_PIDS=()

if [[ ",$STAGES," == *,3g,* ]]; then
# Three groups of three.
start_shardkv 3
sleep 2
"$SKV" bench --controllers "$CTLS" --workload W --ops 1 --keys "$KEYS" --value-size "$VALUE" --load >/dev/null 2>&1
for round in $(seq 1 "$ROUNDS"); do
  for w in ${WORKLOADS//,/ }; do
    for c in ${CLIENTS//,/ }; do
      echo "round $round: 3 groups, workload $w, $c clients"
      bench shardkv shardkv-3g "$w" "$c"
    done
  done
done
stop_shardkv
fi

if [[ ",$STAGES," == *,footprint,* ]]; then
# Footprint: memory and disk per key after loading FOOTPRINT_KEYS keys.
rm -rf "$WORK"/etcd*
start_etcd
start_shardkv 1
sleep 2
ETCD_PIDS=("${PID_OF_PORT[22379]}" "${PID_OF_PORT[22479]}" "${PID_OF_PORT[22579]}")
e0=$(rss_kb "${ETCD_PIDS[@]}"); s0=$(rss_kb "${SKV_PIDS[@]}")
"$SKV" bench --target etcd --endpoints "$ETCD_EPS" --workload W --ops 1 --keys "$FOOTPRINT_KEYS" --value-size "$VALUE" --load >/dev/null 2>&1
"$SKV" bench --controllers "$CTLS" --workload W --ops 1 --keys "$FOOTPRINT_KEYS" --value-size "$VALUE" --load >/dev/null 2>&1
sleep 5
e1=$(rss_kb "${ETCD_PIDS[@]}"); s1=$(rss_kb "${SKV_PIDS[@]}")
ed=$(du -sk "$WORK"/etcd1 "$WORK"/etcd2 "$WORK"/etcd3 | awk '{t+=$1} END {print t}')
sd=$(du -sk "$WORK"/skv | awk '{print $1}')
{
  echo "footprint after $FOOTPRINT_KEYS keys of $VALUE bytes, 3 replicas each:"
  echo "etcd:    RSS +$(( (e1 - e0) / 1024 )) MiB (total $((e1 / 1024)) MiB), disk $((ed / 1024)) MiB, $((ed * 1024 / FOOTPRINT_KEYS)) disk bytes/key"
  echo "shardkv: RSS +$(( (s1 - s0) / 1024 )) MiB (total $((s1 / 1024)) MiB), disk $((sd / 1024)) MiB, $((sd * 1024 / FOOTPRINT_KEYS)) disk bytes/key"
} | tee "$OUT/footprint.txt"
fi

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, glob, os, sys, statistics, collections
out = sys.argv[1]
runs = collections.defaultdict(list)
for f in glob.glob(os.path.join(out, "*.json")):
    label, w, c, _ = os.path.basename(f)[:-5].split("-r")[0].rsplit("-", 2) + [None]
    for r in json.load(open(f)):
        runs[(label, w, int(c))].append(r)
tick = os.sysconf("SC_CLK_TCK")
cpu = collections.defaultdict(list)  # server CPU microseconds per operation, per run
for f in glob.glob(os.path.join(out, "*.cpu")):
    label, w, c = os.path.basename(f)[:-4].split("-r")[0].rsplit("-", 2)
    jf = f[:-4] + ".json"
    if os.path.exists(jf):
        ops = sum(r["ops"] for r in json.load(open(jf)))
        if ops: cpu[(label, w, int(c))].append(int(open(f).read()) * 1e6 / tick / ops)
def best(label, w, c):
    rs = runs.get((label, w, c))
    if not rs: return None
    tp = statistics.median(r["ops_per_second"] for r in rs)
    op = "get" if w == "C" else "put"
    p99 = statistics.median(r["latency"].get(op, {}).get("p99_ms", 0) for r in rs)
    us = statistics.median(cpu[(label, w, c)]) if cpu.get((label, w, c)) else float("nan")
    return tp, p99, us
print("server CPU per operation (cpu µs/op) includes the 2 s warmup's work, for both stores alike")
print(f"{'workload':8} {'clients':>7} {'etcd ops/s':>11} {'p99':>7} {'cpu µs/op':>9} {'shardkv 1g':>11} {'p99':>7} {'cpu µs/op':>9} {'ops ratio':>9} {'cpu ratio':>9} {'shardkv 3g':>11} {'p99':>7} {'3g/1g':>6}")
for (label, w, c) in sorted(k for k in runs if k[0] == "etcd"):
    e, s1, s3 = best("etcd", w, c), best("shardkv-1g", w, c), best("shardkv-3g", w, c)
    s3s = f"{s3[0]:11.0f} {s3[1]:7.1f} {s3[0]/s1[0]:6.2f}" if s3 and s1 else ""
    print(f"{w:8} {c:7d} {e[0]:11.0f} {e[1]:7.1f} {e[2]:9.0f} {s1[0]:11.0f} {s1[1]:7.1f} {s1[2]:9.0f} {s1[0]/e[0]:9.2f} {s1[2]/e[2]:9.2f} {s3s}")
PY
for f in "$OUT"/failover-*.txt; do [ -e "$f" ] && cat "$f"; done >> "$OUT/summary.txt" || true
