#!/usr/bin/env bash
# Every test of the project, with the set-up they need, on a fresh machine.
# Usage: scripts/test.sh            (the README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is missing: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

echo "== set-up (DPDK and test tools)"
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (default build, and with DPDK)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --workspace --all-targets --features bench/dpdk --quiet -- -D warnings

echo "== cargo test"
# Release mode: the end-to-end tests move millions of packets.
cargo test --workspace --release

echo "== switch controller (offline tests of the bfrt controller's logic)"
python3 tofino/controller/test_controller.py

echo "== DPDK tests: memif between two processes, af_packet on a veth pair (root)"
cargo test --release --features dpdk -p bench --test dpdk

echo "== acceptance: embedded YCSB-B with the linearizability check"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
timeout 120 cargo run --release --quiet -- ycsb --embedded --workload b --records 200000 \
    --duration 5 --check --quiet --json "$out/report.json"
python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["schema"] == "netmigrate.report/1", r["schema"]
assert r["ops"]["completed"] > 0, r["ops"]
assert r["ops"]["failed"] == 0, r["ops"]
assert r["consistency"]["checked_ops"] > 0, r["consistency"]
assert r["consistency"]["violations"] == 0, r["consistency"]
assert len(r["timeline"]) >= 40, len(r["timeline"])
print("report ok: %d ops, %.0f ops/s, %d checked, 0 violations"
      % (r["ops"]["completed"], r["throughput_ops"]["overall"], r["consistency"]["checked_ops"]))
PY
echo "== acceptance: NetMigrate experiment (live migration, linearizability check, PNG)"
timeout 300 cargo run --release --quiet -- experiment --protocol netmigrate --records 200000 \
    --duration 20 --migrate-at 5 --check --quiet --json "$out/experiment.json" \
    --plot "$out/experiment.png"
python3 - "$out/experiment.json" "$out/experiment.png" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["command"] == "experiment" and r["protocol"] == "netmigrate", r["command"]
assert r["ops"]["failed"] == 0, r["ops"]
assert r["consistency"]["violations"] == 0 and r["consistency"]["checked_ops"] > 0, r["consistency"]
m = r["migration"]
assert m["finished_at_s"] is not None and m["keys_moved"] == 200000, m
assert open(sys.argv[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
print("experiment ok: migration %.2f s, %.1f MB/s, downtime %.1f ms; throughput before %.0f during %.0f"
      % (m["duration_s"], m["rate_mb_s"], m["downtime_ms"], r["throughput_ops"]["before"],
         r["throughput_ops"]["during"]))
PY
echo "all tests passed"
