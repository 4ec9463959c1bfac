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

echo "== cargo clippy (default build, and with DPDK and etcd)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --workspace --all-targets --features bench/dpdk,bench/etcd --quiet -- -D warnings

echo "== cargo test"
# Release mode: the end-to-end tests move millions of packets.
cargo test --workspace --release

echo "== deterministic simulation: 300 seeds of the default fault mix (docs/simulation.md)"
timeout 600 cargo run --release --quiet -- simulate --seeds 300

echo "== deterministic simulation: chains of 3 replicas, 4 replica crashes a run (docs/replication.md)"
timeout 300 cargo run --release --quiet -- simulate --seeds 200 --replicas 3 --crashes 4

echo "== deterministic simulation: every crash a migration's destination head (docs/replication.md)"
timeout 300 cargo run --release --quiet -- simulate --seeds 200 --replicas 3 --crashes 4 --crash-destination-heads

echo "== switch controller (offline tests of the bfrt controller's logic)"
python3 tofino/controller/test_controller.py

echo "== DPDK tests (memif between two processes, af_packet on a veth pair; root) and etcd"
echo "   tests (a real etcd, the coordinator and chains of server processes killed and restarted)"
cargo test --release --features dpdk,etcd -p bench --test dpdk --test etcd

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
echo "== acceptance: compare (no migration, 3 baselines, NetMigrate x3; linearizability, PNG)"
timeout 600 cargo run --release --quiet -- compare --records 200000 --duration 20 --migrate-at 5 \
    --check --quiet --json "$out/compare.json" --plot "$out/compare.png"
python3 - "$out/compare.json" "$out/compare.png" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["schema"] == "netmigrate.compare/1", doc["schema"]
names = [(r["protocol"], r["policy"]) for r in doc["runs"]]
assert names == [("none", None), ("rocksteady", "medium"), ("fulva", "medium"),
                 ("source", "medium"), ("netmigrate", "short"), ("netmigrate", "medium"),
                 ("netmigrate", "long")], names
for r in doc["runs"]:
    assert r["ops"]["failed"] == 0, (r["protocol"], r["ops"])
    c = r["consistency"]
    assert c["violations"] == 0 and c["checked_ops"] > 0, (r["protocol"], c)
    m = r["migration"]
    if r["protocol"] == "none":
        assert m is None, m
        continue
    assert m["finished_at_s"] is not None and m["keys_moved"] >= 200000, (r["protocol"], m)
    print("%-10s %-6s migration %5.2f s, downtime %5.1f ms (floor %5.1f); ops/s before %6.0f during %6.0f"
          % (r["protocol"], r["policy"], m["duration_s"], m["downtime_ms"], m["downtime_floor_ms"],
             r["throughput_ops"]["before"], r["throughput_ops"]["during"]))
assert open(sys.argv[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
PY
echo "all tests passed"
