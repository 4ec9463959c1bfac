#!/usr/bin/env bash
# Binds a NIC to a DPDK-capable kernel driver (vfio-pci, or igb_uio from dpdk-kmods) for real
# testbeds, remembering its kernel driver so that --undo restores it.
#
# Usage:
#   scripts/bind-nic.sh --status
#   scripts/bind-nic.sh PCI_ADDRESS [vfio-pci|igb_uio]     (default vfio-pci)
#   scripts/bind-nic.sh --undo PCI_ADDRESS
#
# This cannot work inside a VM without an IOMMU or UIO support (such as the project's CI
# machines); the script detects that and says so. Needs dpdk-devbind.py and modprobe
# (scripts/setup.sh --nic-tools).
set -euo pipefail
state_dir=/var/lib/netmigrate
die() { echo "bind-nic.sh: $*" >&2; exit 1; }
need() { # command, how to get it
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

case "${1:-}" in ""|-h|--help) sed -n '2,12p' "$0"; exit 0 ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root"
need dpdk-devbind.py "run scripts/setup.sh --nic-tools"

case "$1" in
    --status) exec dpdk-devbind.py --status-dev net ;;
    --undo)
        pci=${2:?--undo needs a PCI address}
        [ -f "$state_dir/$pci.driver" ] || die "no record of binding $pci; see --status"
        original=$(cat "$state_dir/$pci.driver")
        dpdk-devbind.py --bind="$original" "$pci"
        rm -f "$state_dir/$pci.driver"
        echo "bind-nic.sh: $pci is back on $original"
        exit 0 ;;
esac

pci=$1
driver=${2:-vfio-pci}
[ -e "/sys/bus/pci/devices/$pci" ] || die "no PCI device $pci (see --status)"
case "$driver" in vfio-pci|igb_uio) ;; *) die "driver must be vfio-pci or igb_uio, not $driver" ;; esac

need modprobe "run scripts/setup.sh --nic-tools"
need ip "run scripts/setup.sh"
if ! modprobe "$driver" 2>/dev/null; then
    if [ "$driver" = igb_uio ]; then
        die "igb_uio is not available: build it from dpdk-kmods (git clone of dpdk-kmods, \
make -C linux/igb_uio, insmod igb_uio.ko) or use vfio-pci"
    fi
    die "cannot load $driver: this kernel has no VFIO support (typical inside a VM without an \
IOMMU, such as CI machines). Use DPDK virtual devices here (--vdev=net_memif0, net_af_packet0, \
net_af_xdp0 or net_tap0) and bind NICs on a real testbed"
fi
if [ "$driver" = vfio-pci ] && [ -z "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then
    echo "bind-nic.sh: warning: no IOMMU groups; enabling unsafe no-IOMMU mode" >&2
    echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode
fi
current=$(basename "$(readlink -f "/sys/bus/pci/devices/$pci/driver")" 2>/dev/null || echo none)
[ "$current" = "$driver" ] && { echo "bind-nic.sh: $pci is already on $driver"; exit 0; }
iface=$(find "/sys/bus/pci/devices/$pci/net" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | head -1 || true)
if [ -n "$iface" ]; then
    ip link set "$iface" down
fi
mkdir -p "$state_dir"
echo "$current" > "$state_dir/$pci.driver"
dpdk-devbind.py --bind="$driver" "$pci"
echo "bind-nic.sh: $pci (was ${iface:-no interface} on $current) is on $driver; undo with --undo $pci"
