#!/usr/bin/env bash
# Installs what netmigrate's DPDK transport and its tests need (idempotent):
# DPDK 22.11 LTS from Debian (libdpdk-dev, dpdk-dev for dpdk-testpmd/dpdk-devbind), pkg-config,
# clang/libclang (bindgen), iproute2 (network namespaces for the veth tests).
#
# Usage: scripts/setup.sh [--hugepages N]    (N 2-MiB hugepages; optional: --no-huge works too)
set -euo pipefail
hugepages=0
while [ $# -gt 0 ]; do
    case "$1" in
        --hugepages) hugepages=${2:?--hugepages needs a count}; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

packages=(libdpdk-dev dpdk-dev pkg-config clang libclang-dev iproute2 python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: run as root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "setup.sh: DPDK $(pkg-config --modversion libdpdk) ready"

if [ "$hugepages" -gt 0 ]; then
    echo "$hugepages" > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    mkdir -p /dev/hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
    echo "setup.sh: $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) hugepages of 2 MiB reserved"
fi
