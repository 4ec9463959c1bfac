#!/usr/bin/env bash
# A single-machine testbed in network namespaces, joined by veth pairs through a switch host:
#
#   client (10.88.1.1) --- switch --- source (10.88.2.1)
#                            |
#                            +------- destination (10.88.3.1)
#
# The switch namespace routes with the kernel until a software switch (netmigrate switch,
# on DPDK af_packet / af_xdp or kernel UDP) takes its veth ends over. Interfaces inside each
# namespace are named after the peer: in `client`, `to-switch`; in `switch`, `to-client`,
# `to-source`, `to-dest`.
#
# Usage: scripts/testbed.sh up|down|status [PREFIX]   (namespaces are PREFIX-client, …; default nm)
# Needs ip and sysctl (scripts/setup.sh).
set -euo pipefail
action=${1:-status}
prefix=${2:-nm}
case "$action" in
    up|down|status) ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "usage: scripts/testbed.sh up|down|status [PREFIX]" >&2; exit 2 ;;
esac
need() { # command, how to get it
    command -v "$1" >/dev/null 2>&1 || { echo "testbed.sh: $1 not found: $2" >&2; exit 1; }
}
need ip "run scripts/setup.sh"
[ "$action" != up ] || need sysctl "run scripts/setup.sh"
hosts=(client source destination)
declare -A subnet=([client]=1 [source]=2 [destination]=3)
declare -A switch_if=([client]=to-client [source]=to-source [destination]=to-dest)
ns() { echo "$prefix-$1"; }
exists() { ip netns list | grep -qw "$(ns "$1")"; }

case "$action" in
    up)
        [ "$(id -u)" -eq 0 ] || { echo "testbed.sh: run as root" >&2; exit 1; }
        exists switch && { echo "testbed.sh: already up (scripts/testbed.sh down $prefix first)"; exit 0; }
        ip netns add "$(ns switch)"
        ip -n "$(ns switch)" link set lo up
        ip netns exec "$(ns switch)" sysctl -qw net.ipv4.ip_forward=1
        for host in "${hosts[@]}"; do
            n=${subnet[$host]}
            ip netns add "$(ns "$host")"
            ip -n "$(ns "$host")" link set lo up
            ip link add "nm$n-h" netns "$(ns "$host")" type veth peer name "nm$n-s" netns "$(ns switch)"
            ip -n "$(ns "$host")" link set "nm$n-h" name to-switch
            ip -n "$(ns switch)" link set "nm$n-s" name "${switch_if[$host]}"
            ip -n "$(ns "$host")" addr add "10.88.$n.1/24" dev to-switch
            ip -n "$(ns switch)" addr add "10.88.$n.254/24" dev "${switch_if[$host]}"
            ip -n "$(ns "$host")" link set to-switch up
            ip -n "$(ns switch)" link set "${switch_if[$host]}" up
            ip -n "$(ns "$host")" route add default via "10.88.$n.254"
        done
        echo "testbed.sh: up: $(ns client) 10.88.1.1, $(ns source) 10.88.2.1, $(ns destination) 10.88.3.1 via $(ns switch)"
        echo "run a command on a host with: ip netns exec $(ns client) COMMAND" ;;
    down)
        for host in switch "${hosts[@]}"; do
            exists "$host" && ip netns del "$(ns "$host")"
        done
        echo "testbed.sh: down" ;;
    status)
        for host in "${hosts[@]}" switch; do
            if exists "$host"; then
                echo "$(ns "$host"):"; ip -n "$(ns "$host")" -brief addr | sed 's/^/  /'
            else
                echo "$(ns "$host"): absent"
            fi
        done ;;
    *) echo "usage: scripts/testbed.sh up|down|status [PREFIX]" >&2; exit 2 ;;
esac
