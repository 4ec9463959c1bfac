#!/usr/bin/env bash
# GET throughput and latency of one netmigrate server core over DPDK memif, under a DPDK
# YCSB client in a second process, next to redis-server under redis-benchmark on loopback,
# on this machine in one run. Ends with three lines:
#   netmigrate_ops_per_s=N   redis_ops_per_s=N   ratio=X
#
# Usage: scripts/bench-dpdk.sh [records] [seconds] [window] [runs]
# Needs root, the DPDK build's packages (scripts/setup.sh), redis-server and redis-benchmark
# (scripts/setup.sh --bench-tools), and a release build with --features dpdk (done here).
# Frames over memif carry no UDP checksum (--udp-checksum auto: no wire, as on loopback, where
# the kernel skips it for redis too); UDP_CHECKSUM=compute makes both processes compute it.
# The client is memif's zero-copy side (its mbufs lie in memory it shares with the server, as
# a NIC writes into a host's mbufs), which needs 2-MiB hugepages: 256 are reserved if fewer
# are; ZERO_COPY=no (or no hugepages) makes both sides copy.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
seconds=${2:-8}
window=${3:-128}
runs=${4:-3}
redis_port=6391
udp_checksum=${UDP_CHECKSUM:-auto}
zero_copy=${ZERO_COPY:-yes}

need() { # command, how to get it
    command -v "$1" >/dev/null 2>&1 || { echo "bench-dpdk.sh: $1 not found: $2" >&2; exit 1; }
}
need cargo "install Rust (https://rustup.rs)"
need python3 "run scripts/setup.sh"
need taskset "run scripts/setup.sh"
need redis-server "run scripts/setup.sh --bench-tools"
need redis-benchmark "run scripts/setup.sh --bench-tools"
scripts/setup.sh --check >/dev/null || exit 1 # Names the DPDK build's missing packages.
cargo build --release --quiet --features dpdk
bin=target/release/netmigrate
work=$(mktemp -d)
socket="$work/memif.sock"
cleanup() {
    if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ -n "${redis_pid:-}" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
eal() { echo "-l $1 --no-pci --no-huge -m 512 --file-prefix nmbench$1 --vdev=net_memif0,role=$2,socket=$socket"; }
hugepages=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ "$zero_copy" = yes ] && [ "$(cat "$hugepages" 2>/dev/null || echo 0)" -lt 256 ]; then
    scripts/setup.sh --hugepages 256 >/dev/null 2>&1 || true
fi
if [ "$zero_copy" = yes ] && [ "$(cat "$hugepages" 2>/dev/null || echo 0)" -ge 256 ]; then
    client_eal="-l 1 --no-pci --in-memory --single-file-segments --file-prefix nmbench1 --vdev=net_memif0,role=client,socket=$socket,zero-copy=yes"
else
    [ "$zero_copy" = yes ] && echo "bench-dpdk.sh: no 2-MiB hugepages could be reserved: the client copies too" >&2
    zero_copy=no
    client_eal=$(eal 1 client)
fi

# Both netmigrate processes busy-poll their cores, as DPDK applications do (redis-server waits
# in epoll, as it is built to). One measurement of each side; run `runs` times, alternating, and the medians are reported
# (this VM's throughput drifts by tens of percent between runs).
measure_netmigrate() {
    "$bin" server --transport dpdk --listen 10.0.0.2:7100 --cores 0 --capacity "$records" --busy-poll \
        --udp-checksum "$udp_checksum" --eal "$(eal 0 server)" >/dev/null 2>"$work/server.log" &
    server_pid=$!
    # memif sockets are abstract: listed in /proc/net/unix as @path, no file.
    for _ in $(seq 100); do grep -q "@$socket\$" /proc/net/unix && break; sleep 0.1; done
    taskset -c 1 "$bin" ycsb --transport dpdk --server 10.0.0.2:7100 --eal "$client_eal" \
        --udp-checksum "$udp_checksum" \
        --records "$records" --workload c -p requestdistribution=uniform --duration "$seconds" \
        --window "$window" --busy-poll --quiet --json "$work/nm.json" 2>"$work/client.log" >/dev/null
    kill -INT "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
    python3 -c "
import json,sys; r=json.load(open(sys.argv[1])); l=r['latency_us']['overall']
print(round(r['throughput_ops']['overall']), l['p50'], l['p99'])" "$work/nm.json"
}

measure_redis() {
    taskset -c 0 redis-server --port $redis_port --save "" --appendonly no >/dev/null 2>&1 &
    redis_pid=$!
    sleep 0.5
    taskset -c 1 redis-benchmark -p $redis_port -t set -n "$records" -r "$records" -d 64 -c 1 \
        -P "$window" -q >/dev/null
    taskset -c 1 redis-benchmark -p $redis_port -t get -n $((records * 10)) -r "$records" -d 64 \
        -c 1 -P "$window" -q --csv >"$work/redis.csv"
    kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=
    python3 -c "
import csv,sys; rows=list(csv.reader(open(sys.argv[1]))); h=rows[0]; g=[r for r in rows if r[0]=='GET'][0]
p50=g[h.index('p50_latency_ms')] if 'p50_latency_ms' in h else '?'
print(round(float(g[1])), p50)" "$work/redis.csv"
}

# Both benchmarks exchange cache lines between cores 0 and 1 for every burst, so their figures
# follow the cores' round trip, which on a VM changes with where the host puts the vCPUs (on
# our 2-vCPU test VM: ~30, ~65 or ~330 ns, from minute to minute). Each run prints the round
# trip measured just before and just after it.
round_trip() { "$bin" core-latency --cores 0,1 --rounds 100000 | sed -n 's/.*round trip \([0-9.]*\) ns.*/\1/p'; }

echo "== $runs run(s) each: DPDK server (core 0) <-memif-> DPDK YCSB client (core 1), GET, window $window,"
echo "   UDP checksums $udp_checksum, client zero-copy $zero_copy;"
echo "   redis-server (core 0) under redis-benchmark (core 1), GET, pipeline $window"
: >"$work/nm.txt"; : >"$work/redis.txt"
for run in $(seq "$runs"); do
    before=$(round_trip)
    read -r ops p50 p99 < <(measure_netmigrate)
    trip="$before/$(round_trip)"
    echo "$ops $p50 $p99 $trip" >>"$work/nm.txt"
    echo "run $run: netmigrate GET $ops ops/s, p50 ${p50} us, p99 ${p99} us (core round trip before/after: $trip ns)"
    before=$(round_trip)
    read -r ops p50 < <(measure_redis)
    trip="$before/$(round_trip)"
    echo "$ops $p50 $trip" >>"$work/redis.txt"
    echo "run $run: redis GET $ops ops/s, p50 ${p50} ms (core round trip before/after: $trip ns)"
done
median() { sort -n -k1,1 "$1" | awk '{ rows[NR] = $0 } END { print rows[int((NR + 1) / 2)] }'; }
read -r nm_ops nm_p50 nm_p99 nm_trip < <(median "$work/nm.txt")
read -r redis_ops redis_p50 redis_trip < <(median "$work/redis.txt")
echo "median: netmigrate GET $nm_ops ops/s (p50 ${nm_p50} us, p99 ${nm_p99} us, round trip ${nm_trip} ns of that run); redis GET $redis_ops ops/s (p50 ${redis_p50} ms, round trip ${redis_trip} ns)"

echo "netmigrate_ops_per_s=$nm_ops"
echo "redis_ops_per_s=$redis_ops"
python3 -c "import sys; print(f'ratio={int(sys.argv[1])/int(sys.argv[2]):.2f}')" "$nm_ops" "$redis_ops"
