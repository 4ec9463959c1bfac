#!/usr/bin/env bash
# Failover of a chain kept in etcd, measured: an etcd of its own on loopback, `netmigrate
# coordinator`, three `server --etcd` and YCSB-A through `ycsb --etcd --check`; the head is
# killed with SIGKILL, then restarted empty. Prints the time clients got no answers (from the
# run's 100-ms timeline), how long the restarted replica took to become the tail again, and the
# run's failed operations and violations.
#
# Usage: scripts/bench-failover.sh [--records N] [--duration S] [--kill-at S] [--restart-after S]
#                                  [--lease-ttl S] [--fsync never|batch|always] [--keep]
#   --keep: keep the processes' logs, the report and the history (the directory is printed)
#   defaults: 20000 records, a 15-s run, head killed 5 s into the run, restarted 2 s later,
#   2-s leases,
#   no log. Needs a build with the etcd feature and etcd-server (scripts/setup.sh).
set -euo pipefail
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "bench-failover.sh: $*" >&2; exit 2; }

records=20000 duration=15 kill_at=5 restart_after=2 ttl=2 fsync="" keep=no
while [ $# -gt 0 ]; do
    case "$1" in -h|--help|--keep) ;; *) [ $# -ge 2 ] || die "$1 needs a value (try --help)" ;; esac
    case "$1" in
        --keep) keep=yes; shift ;;
        --records) records=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --kill-at) kill_at=$2; shift 2 ;;
        --restart-after) restart_after=$2; shift 2 ;;
        --lease-ttl) ttl=$2; shift 2 ;;
        --fsync) fsync=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
command -v etcd >/dev/null || die "etcd is missing: run scripts/setup.sh as root"
cd "$(dirname "$0")/.."
cargo build --release --quiet --features etcd
bin=target/release/netmigrate

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$keep" = yes ]; then echo "kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port) peer=$(free_port)
url=http://127.0.0.1:$client
etcd --name failover --data-dir "$work/etcd" --listen-client-urls "$url" \
    --advertise-client-urls "$url" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "failover=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$client),1)" 2>/dev/null && break
    sleep 0.1
done

$bin coordinator --etcd "$url" --replicas 3 >"$work/coordinator.log" 2>&1 &
pids+=($!)
addrs=(127.0.0.1:7410 127.0.0.1:7420 127.0.0.1:7430)
server() { # index, log name
    local extra=()
    [ -n "$fsync" ] && extra=(--log-dir "$work/log-$1" --fsync "$fsync")
    $bin server --listen "${addrs[$1]}" --partitions 2 --etcd "$url" --lease-ttl "$ttl" \
        "${extra[@]}" >"$work/$2.log" 2>&1 &
    pids+=($!)
    eval "server_pid_$1=$!"
}
server 0 s0; server 1 s1; server 2 s2

$bin ycsb --etcd "$url" --partitions 2 -w a --records "$records" --duration "$duration" \
    --threads 2 --window 16 --check --json "$work/report.json" --history "$work/history.jsonl" \
    >"$work/ycsb.log" 2>&1 &
ycsb=$!
# The kill time counts from the end of the load.
for _ in $(seq 1200); do grep -qs "^load:" "$work/ycsb.log" && break; sleep 0.05; done
sleep "$kill_at"
{ kill -9 "$server_pid_0"; wait "$server_pid_0"; } 2>/dev/null || true
killed=$(date +%s.%N)
sleep "$restart_after"
server 0 s0-restarted
restarted=$(date +%s.%N)
rejoined=""
for _ in $(seq 600); do
    if grep -q ": Tail" "$work/s0-restarted.log"; then rejoined=$(date +%s.%N); break; fi
    sleep 0.05
done
wait "$ycsb" || { cat "$work/ycsb.log" >&2; die "ycsb failed"; }
python3 - "$work/report.json" "$killed" "$restarted" "${rejoined:-0}" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
killed, restarted, rejoined = (float(x) for x in sys.argv[2:5])
timeline = report["timeline"]
# The longest run of 100-ms slots without a completed operation.
longest = gap = 0
for slot in timeline:
    gap = gap + 1 if slot["ops"] == 0 else 0
    longest = max(longest, gap)
print(f"outage_ms={longest * 100} (longest stretch of 100-ms slots with no operation completed)")
print("rejoin_s=" + (f"{rejoined - restarted:.2f}" if rejoined else "none (not the tail by the end)"))
ops, consistency = report["ops"], report["consistency"]
print(f"throughput_ops={report['throughput_ops']['overall']:.0f} failed={ops['failed']} "
      f"violations={consistency['violations']} checked={consistency['checked_ops']}")
EOF
grep "epoch" "$work/coordinator.log" | sed 's/^netmigrate coordinator: /  /'
