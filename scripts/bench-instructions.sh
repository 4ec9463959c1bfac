#!/usr/bin/env bash
# Instructions per request on the server's burst path (`PartitionServer::handle_burst`, as the
# serving loop runs it), counted by callgrind. Unlike time on a shared VM, the count does not
# move with the host's load or where it places the vCPUs, so it compares two builds of the
# serving path exactly. It is CPU work only: cache misses and their stalls are not in it (the
# throughput is `cargo bench -p bench --bench serving`).
#
# Usage: scripts/bench-instructions.sh [records] [distribution]
#   records       keys in the table (default 10000: the table fits the caches)
#   distribution  uniform | zipfian | latest ... (default uniform)
# Prints instructions_per_request=N.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-10000}
distribution=${2:-uniform}

if ! command -v valgrind >/dev/null; then
    echo "installing valgrind (apt-get install valgrind)" >&2
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
bin=$(cargo bench -p bench --bench serving --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "serving" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "bench-instructions.sh: the serving bench did not build" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "counting instructions of the burst path: $records records, $distribution (seconds for 10 000 records, minutes for millions)" >&2
NM_SERVING_RECORDS=$records NM_SERVING_DISTRIBUTION=$distribution \
    valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*handle_burst*' \
    "$bin" --bench --profile-time 1 request_path_get_burst32 >/dev/null 2>&1
# Requests = calls of PartitionServer::handle (one per packet) seen inside handle_burst.
python3 - "$out" <<'PY'
import re, sys
names, requests, callee, total = {}, 0, None, None
for line in open(sys.argv[1]):
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1):
            callee = names.get(m.group(2))
        continue
    if line.startswith("calls=") and callee and callee.endswith("PartitionServer::handle"):
        requests += int(line.split("=")[1].split()[0])
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
if not requests or total is None:
    sys.exit("bench-instructions.sh: no requests counted (did the bench run?)")
print("requests_counted=%d" % requests)
print("instructions_per_request=%.0f" % (total / requests))
PY
