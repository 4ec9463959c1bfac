#!/usr/bin/env bash
# Installs what the build, the tests and the scripts in scripts/ need, from Debian's packages
# (idempotent; root). No other script installs anything: each names what it lacks and the
# flag of this script that brings it.
#
# Usage: scripts/setup.sh [--bench-tools] [--nic-tools] [--all] [--hugepages N] [--check]
#   (always)       the DPDK build and scripts/test.sh: DPDK 22.11 LTS (libdpdk-dev, dpdk-dev),
#                  pkg-config, clang and libclang-dev (bindgen), iproute2 (ip: the veth tests,
#                  testbed.sh), procps (sysctl), util-linux (taskset, mountpoint), python3;
#                  the etcd build and its tests: protobuf-compiler (protoc), etcd-server
#   --bench-tools  also the benchmarks' tools: redis-server and redis-tools (redis-benchmark:
#                  bench-redis.sh, bench-dpdk.sh), valgrind (bench-instructions.sh)
#   --nic-tools    also what bind-nic.sh needs on a real testbed: dpdk (dpdk-devbind.py), kmod
#                  (modprobe)
#   --all          every set above
#   --hugepages N  then reserve N 2-MiB hugepages and mount hugetlbfs (optional: DPDK runs with
#                  --no-huge too; bench-dpdk.sh's zero-copy client needs 256)
#   --check        install nothing: name the chosen sets' missing packages, exit 1 if any
#   -h, --help     this text
set -euo pipefail
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "setup.sh: $*" >&2; exit 2; }

base=(libdpdk-dev dpdk-dev pkg-config clang libclang-dev iproute2 procps util-linux python3
      protobuf-compiler etcd-server)
bench_tools=(redis-server redis-tools valgrind)
nic_tools=(dpdk kmod)

packages=("${base[@]}")
flags=()
hugepages=0
check=no
while [ $# -gt 0 ]; do
    case "$1" in
        --bench-tools) packages+=("${bench_tools[@]}"); flags+=("$1"); shift ;;
        --nic-tools) packages+=("${nic_tools[@]}"); flags+=("$1"); shift ;;
        --all) packages+=("${bench_tools[@]}" "${nic_tools[@]}"); flags+=("$1"); shift ;;
        --hugepages)
            [ $# -ge 2 ] || die "--hugepages needs a count (try --help)"
            case "$2" in ''|*[!0-9]*) die "--hugepages needs a count, got '$2' (try --help)" ;; esac
            hugepages=$2; shift 2 ;;
        --check) check=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "installs Debian packages with apt-get; elsewhere install the equivalents of: ${packages[*]}"
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Each package once, in order (--all after --bench-tools names some twice).
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')
if [ "$check" = yes ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        run=scripts/setup.sh
        for flag in "${flags[@]}"; do run+=" $flag"; done
        echo "setup.sh: missing ${missing[*]}: run $run as root" >&2
        exit 1
    fi
    echo "setup.sh: every package is installed"
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "setup.sh: run as root to install: ${missing[*]}" >&2; exit 1; }
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "setup.sh: DPDK $(pkg-config --modversion libdpdk) ready"

if [ "$hugepages" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "setup.sh: run as root to reserve hugepages" >&2; exit 1; }
    echo "$hugepages" > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
    echo "setup.sh: $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) hugepages of 2 MiB reserved"
fi
