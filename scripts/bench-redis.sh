#!/usr/bin/env bash
# Serving throughput of one netmigrate server core next to redis-server on the same machine.
#
# netmigrate: `netmigrate server` (1 partition pinned to core 0) under `netmigrate ycsb` over
# kernel UDP on loopback (client on core 1), and the in-process backend (`ycsb --embedded`);
# redis: redis-server pinned to core 0 under redis-benchmark on core 1. Same value size (64 B),
# 8-byte keys for netmigrate, uniform keys over the same record count, and a pipeline depth
# equal to our outstanding window. Prints ops/s for GET and SET and the ratios.
#
# Usage: scripts/bench-redis.sh [records] [seconds] [window]
# Needs redis-server and redis-benchmark (scripts/setup.sh --bench-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
seconds=${2:-10}
window=${3:-32}
port=7300
redis_port=6390

need() { # command, how to get it
    command -v "$1" >/dev/null 2>&1 || { echo "bench-redis.sh: $1 not found: $2" >&2; exit 1; }
}
need cargo "install Rust (https://rustup.rs)"
need python3 "run scripts/setup.sh"
need taskset "run scripts/setup.sh"
need redis-server "run scripts/setup.sh --bench-tools"
need redis-benchmark "run scripts/setup.sh --bench-tools"
cargo build --release --quiet
bin=target/release/netmigrate
work=$(mktemp -d)
cleanup() {
    if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ -n "${redis_pid:-}" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

ops_of() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['throughput_ops']['overall']))" "$1"; }
p50_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency_us']['overall']['p50'])" "$1"; }

run_ycsb() { # name, extra args...
    local name=$1; shift
    taskset -c 1 "$bin" ycsb --quiet --records "$records" --duration "$seconds" --window "$window" \
        -p requestdistribution=uniform --json "$work/$name.json" "$@" >/dev/null 2>&1
}

echo "== netmigrate over kernel UDP (server core 0, client core 1)"
"$bin" server --listen 127.0.0.1:$port --cores 0 --capacity "$records" >/dev/null 2>"$work/server.log" &
server_pid=$!
sleep 0.5
run_ycsb udp_get --server 127.0.0.1:$port --workload c
run_ycsb udp_set --server 127.0.0.1:$port --workload c --skip-load -p readproportion=0 -p updateproportion=1
kill -INT "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

echo "== netmigrate in-process (embedded server pinned to core 0, client core 1)"
run_ycsb mem_get --embedded --server-cores 0 --workload c
run_ycsb mem_set --embedded --server-cores 0 --workload c -p readproportion=0 -p updateproportion=1

echo "== redis-server (core 0) under redis-benchmark (core 1), pipeline $window"
taskset -c 0 redis-server --port $redis_port --save "" --appendonly no >/dev/null 2>&1 &
redis_pid=$!
sleep 0.5
requests=$((records * 10))
taskset -c 1 redis-benchmark -p $redis_port -t set,get -n "$requests" -r "$records" -d 64 \
    -c 1 -P "$window" -q --csv >"$work/redis.csv"
redis_get=$(python3 -c "import csv,sys; print(round(float([r for r in csv.reader(open(sys.argv[1])) if r[0]=='GET'][0][1])))" "$work/redis.csv")
redis_set=$(python3 -c "import csv,sys; print(round(float([r for r in csv.reader(open(sys.argv[1])) if r[0]=='SET'][0][1])))" "$work/redis.csv")

udp_get=$(ops_of "$work/udp_get.json"); udp_set=$(ops_of "$work/udp_set.json")
mem_get=$(ops_of "$work/mem_get.json"); mem_set=$(ops_of "$work/mem_set.json")
printf '\n%-34s %14s %14s\n' "" "GET ops/s" "SET ops/s"
printf '%-34s %14s %14s\n' "netmigrate, kernel UDP loopback" "$udp_get" "$udp_set"
printf '%-34s %14s %14s\n' "netmigrate, in-process" "$mem_get" "$mem_set"
printf '%-34s %14s %14s\n' "redis-server, redis-benchmark -P $window" "$redis_get" "$redis_set"
python3 - "$udp_get" "$udp_set" "$mem_get" "$mem_set" "$redis_get" "$redis_set" <<'PY'
import sys
ug, us, mg, ms, rg, rs = map(float, sys.argv[1:])
print(f"ratio udp/redis: GET {ug/rg:.2f}x  SET {us/rs:.2f}x")
print(f"ratio in-process/redis: GET {mg/rg:.2f}x  SET {ms/rs:.2f}x")
PY
echo "(p50 us: udp GET $(p50_of "$work/udp_get.json"), in-process GET $(p50_of "$work/mem_get.json"))"
