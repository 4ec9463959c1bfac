#!/usr/bin/env bash
# Instructions per request, counted by callgrind. Unlike time on a shared VM, the count does
# not move with the host's load or where it places the vCPUs, so it compares two builds
# exactly. It is CPU work only: cache misses and their stalls are not in it (the throughput is
# `cargo bench -p bench --bench serving` / `--bench client`).
#
# Usage: scripts/bench-instructions.sh [server|client|dpdk-client|migration] [records] [distribution]
#   server        the server's burst path (`PartitionServer::handle_burst`, as the serving loop
#                 runs it), from the `serving` bench (the default)
#   client        one YCSB client thread (workload C, window 128) served on the same thread,
#                 from the `client` bench: the whole per request, the server's share, the rest
#   dpdk-client   the DPDK YCSB client process over memif (workload C, uniform, window 128;
#                 copying: valgrind cannot map hugepages) against a DPDK server running
#                 natively; root. Two runs, of 2 and 5 s: the difference of their counts over
#                 the difference of their operations, so start-up and load cancel out;
#                 NM_BIN=path counts that netmigrate binary instead of this tree's
#   migration     the migration path alone, from the `migration` bench (migration crate):
#                 a source scanning and encoding every group, and a destination decoding and
#                 applying every batch; 8-byte keys, 64-byte values; one pass of each side
#   records       keys in the table (default 10000: the table fits the caches; migration:
#                 1000000, so the 65 536 groups are not mostly empty)
#   distribution  server only: uniform | zipfian | latest ... (default uniform)
# Prints instructions_per_request=N (client: also server_instructions_per_request and
# client_instructions_per_request; migration: source_instructions_per_entry and
# destination_instructions_per_entry). Needs valgrind (scripts/setup.sh --bench-tools);
# dpdk-client also the DPDK build's packages (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
what=server
case "${1:-}" in
    server|client|dpdk-client|migration) what=$1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
esac
records=${1:-$([ "$what" = migration ] && echo 1000000 || echo 10000)}
distribution=${2:-uniform}
case "$records" in
    ''|*[!0-9]*) echo "bench-instructions.sh: records must be a number, got '$records' (try --help)" >&2; exit 2 ;;
esac

need() { # command, how to get it
    command -v "$1" >/dev/null 2>&1 || { echo "bench-instructions.sh: $1 not found: $2" >&2; exit 1; }
}
need valgrind "run scripts/setup.sh --bench-tools"
need python3 "run scripts/setup.sh"
need cargo "install Rust (https://rustup.rs)"

if [ "$what" = dpdk-client ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bench-instructions.sh: dpdk-client needs root (DPDK)" >&2; exit 1; }
    need taskset "run scripts/setup.sh"
    scripts/setup.sh --check >/dev/null || exit 1 # Names the DPDK build's missing packages.
    # NM_BIN counts another build (say, a copy of an older one) for an A/B comparison.
    bin=${NM_BIN:-target/release/netmigrate}
    [ -n "${NM_BIN:-}" ] || cargo build --release --quiet --features dpdk
    work=$(mktemp -d)
    trap 'kill "${server_pid:-}" 2>/dev/null; rm -rf "$work"' EXIT
    # Prints "operations instructions" for one run of the client of `seconds`.
    client_run() {
        local seconds=$1 socket="$work/memif$1.sock"
        local vdev="--vdev=net_memif0,socket=$socket"
        "$bin" server --transport dpdk --listen 10.0.0.2:7100 --cores 0 --capacity "$records" \
            --duration 300 --eal "-l 0 --no-pci --no-huge -m 512 --file-prefix nmicount0 $vdev,role=server" \
            >/dev/null 2>"$work/server.log" &
        server_pid=$!
        # memif sockets are abstract: listed in /proc/net/unix as @path, no file.
        for _ in $(seq 100); do grep -q "@$socket\$" /proc/net/unix && break; sleep 0.1; done
        taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$work/client$seconds.out" \
            "$bin" ycsb --transport dpdk --server 10.0.0.2:7100 --records "$records" --workload c \
            -p requestdistribution=uniform --window 128 --busy-poll --duration "$seconds" --quiet \
            --json "$work/client$seconds.json" \
            --eal "-l 1 --no-pci --no-huge -m 512 --file-prefix nmicount1 $vdev,role=client" \
            >/dev/null 2>"$work/client.log" || { cat "$work/client.log" >&2; exit 1; }
        kill -INT "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
        python3 - "$work/client$seconds.json" "$work/client$seconds.out" <<'PY'
import json, sys
ops = json.load(open(sys.argv[1]))["ops"]["completed"]
total = next(int(l.split()[1]) for l in open(sys.argv[2]) if l.startswith(("summary:", "totals:")))
print(ops, total)
PY
    }
    echo "counting instructions (DPDK client over memif, $records records: two runs under callgrind)" >&2
    read -r ops_short count_short < <(client_run 2)
    read -r ops_long count_long < <(client_run 5)
    echo "requests_counted=$((ops_long - ops_short))"
    echo "instructions_per_request=$(((count_long - count_short) / (ops_long - ops_short)))"
    exit 0
fi

# The executable of bench $2 of crate $1.
bench_binary() {
    cargo bench -p "$1" --bench "$2" --no-run --message-format=json 2>/dev/null |
        BENCH=$2 python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == os.environ["BENCH"] \
            and m.get("executable"):
        print(m["executable"])'
}

if [ "$what" = migration ]; then
    bin=$(bench_binary migration migration)
    [ -n "$bin" ] || { echo "bench-instructions.sh: the migration bench did not build" >&2; exit 1; }
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    echo "counting instructions (migration path, $records entries; a minute per million)" >&2
    echo "entries_counted=$records"
    for side in source destination; do
        NM_MIGRATION_RECORDS=$records NM_MIGRATION_ONCE=$side valgrind --tool=callgrind \
            --callgrind-out-file="$out" --toggle-collect="*pass_$side*" "$bin" --bench \
            >/dev/null 2>&1
        total=$(grep -E '^(summary|totals):' "$out" | head -1 | cut -d' ' -f2)
        echo "${side}_instructions_per_entry=$((total / records))"
    done
    exit 0
fi

bench=$([ "$what" = server ] && echo serving || echo client)
bin=$(bench_binary bench "$bench")
[ -n "$bin" ] || { echo "bench-instructions.sh: the $bench bench did not build" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "counting instructions ($what, $records records; seconds for 10 000, minutes for millions)" >&2
if [ "$what" = server ]; then
    NM_SERVING_RECORDS=$records NM_SERVING_DISTRIBUTION=$distribution \
        valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*handle_burst*' \
        "$bin" --bench --profile-time 1 request_path_get_burst32 >/dev/null 2>&1
else
    NM_CLIENT_RECORDS=$records \
        valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='*run_on_this_thread*' "$bin" --bench --profile-time 1 >/dev/null 2>&1
fi
# Requests = calls of Partition::get: every request of these benches is a GET, which looks
# its key up once (the request handlers themselves may be inlined). Inclusive costs of calls
# are on the line after each `calls=` line.
WHAT=$what python3 - "$out" <<'PY'
import os, re, sys
names, requests, callee, total, pending = {}, 0, None, None, False
inclusive = {}
for line in open(sys.argv[1]):
    if pending:
        pending = False
        inclusive[callee] = inclusive.get(callee, 0) + int(line.split()[1])
        continue
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1):
            callee = names.get(m.group(2))
        continue
    if line.startswith("calls=") and callee:
        pending = True
        if callee.endswith("kv::table::Partition::get"):
            requests += int(line.split("=")[1].split()[0])
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
if not requests or total is None:
    sys.exit("bench-instructions.sh: no requests counted (did the bench run?)")
print("requests_counted=%d" % requests)
print("instructions_per_request=%.0f" % (total / requests))
if os.environ["WHAT"] == "client":
    server = sum(v for k, v in inclusive.items() if k.endswith("PartitionServer::handle_burst"))
    print("server_instructions_per_request=%.0f" % (server / requests))
    print("client_instructions_per_request=%.0f" % ((total - server) / requests))
PY
