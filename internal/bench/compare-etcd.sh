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
SKV="$WORK/shardkv" # the load generator and the admin commands
# SKV_BIN runs the servers from a prebuilt binary (another revision, for
# before/after tables); by default from the working tree.
SRV=${SKV_BIN:-$SKV}

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
    "$SRV" controller --id $i --listen 127.0.0.1:$((27099 + i)) --data "$WORK/skv/c$i" \
      --peers 1=127.0.0.1:27100,2=127.0.0.1:27101,3=127.0.0.1:27102 --log-level warn >"$WORK/c$i.log" 2>&1 &
    ALL_PIDS+=($!); SKV_PIDS+=($!); PID_OF_PORT[$((27099 + i))]=$!
  done
  local joins=()
  for g in $(seq 1 "$1"); do
    local base=$((27100 + 10 * g)) peers=""
    for i in 1 2 3; do peers+="${peers:+,}$i=127.0.0.1:$((base + i))"; done
    for i in 1 2 3; do
      "$SRV" server --group "$g" --id $i --listen 127.0.0.1:$((base + i)) --data "$WORK/skv/g$g-$i" \
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

bench() { # target label workload clients -> one JSON file; the servers' CPU is measured by bench itself
  local target=$1 label=$2 w=$3 c=$4 pids
  local args=(--workload "$w" --clients "$c" --ops "$OPS" --duration 120s --warmup 2s --keys "$KEYS" --value-size "$VALUE" -o json)
  if [ "$target" = etcd ]; then
    args+=(--target etcd --endpoints "$ETCD_EPS"); pids=("${PID_OF_PORT[22379]}" "${PID_OF_PORT[22479]}" "${PID_OF_PORT[22579]}")
  else
    args+=(--controllers "$CTLS"); pids=("${SKV_PIDS[@]}")
  fi
  "$SKV" bench "${args[@]}" --server-pids "$(IFS=,; echo "${pids[*]}")" >"$OUT/$label-$w-$c-r$round.json" 2>>"$WORK/bench.log"
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
    label, w, c = os.path.basename(f)[:-5].split("-r")[0].rsplit("-", 2)
    runs[(label, w, int(c))] += json.load(open(f))
def med(label, w, c):
    rs = runs.get((label, w, c))
    if not rs: return None
    op = "get" if w == "C" else "put"
    m = lambda f: statistics.median(f(r) for r in rs)
    return dict(tp=m(lambda r: r["ops_per_second"]), p99=m(lambda r: r["latency"].get(op, {}).get("p99_ms", 0)),
                srv=m(lambda r: r.get("server_cpu_us_per_op", 0)), gen=m(lambda r: r.get("client_cpu_us_per_op", 0)))
print("medians over the rounds; CPU is over the measured part of each run (µs per operation): srv = the store's processes, gen = the load generator")
print(f"{'workload':8} {'clients':>7} | {'etcd ops/s':>10} {'p99':>6} {'srv':>5} {'gen':>5} | {'shardkv':>8} {'p99':>6} {'srv':>5} {'gen':>5} | {'ops':>5} {'p99':>5} {'srv':>5} {'gen':>5} | {'3g ops/s':>8} {'srv':>5} {'3g/1g srv':>9}")
for (label, w, c) in sorted(k for k in runs if k[0] == "etcd"):
    e, s, s3 = med("etcd", w, c), med("shardkv-1g", w, c), med("shardkv-3g", w, c)
    if not s: continue
    r = lambda k: s[k] / e[k] if e[k] else float("nan")
    tail = f" | {s3['tp']:8.0f} {s3['srv']:5.0f} {s3['srv']/s['srv']:9.2f}" if s3 and s['srv'] else ""
    print(f"{w:8} {c:7d} | {e['tp']:10.0f} {e['p99']:6.1f} {e['srv']:5.0f} {e['gen']:5.0f} | {s['tp']:8.0f} {s['p99']:6.1f} {s['srv']:5.0f} {s['gen']:5.0f} | {r('tp'):5.2f} {r('p99'):5.2f} {r('srv'):5.2f} {r('gen'):5.2f}{tail}")
print("ratios are shardkv / etcd: ops above 1, p99 and CPU below 1 favour shardkv")
PY
for f in "$OUT"/failover-*.txt; do [ -e "$f" ] && cat "$f"; done >> "$OUT/summary.txt" || true
