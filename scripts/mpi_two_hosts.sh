#!/usr/bin/env bash
# Data-parallel training over TCP between two "hosts" on one machine: two network
# namespaces joined by a veth pair (10.200.0.1 and 10.200.0.2), one rank in each,
# launched by mpirun with a hostfile (and a rankfile pinning the ranks to cores 0
# and 1), with netns-rsh standing in for ssh. Needs root, iproute2, util-linux
# (unshare) and Open MPI; run from the repository root after
#   cargo build --release --features mpi --example conv_net
#
#   scripts/mpi_two_hosts.sh [STEPS]        (default 40 steps)
#   scripts/mpi_two_hosts.sh --run PROGRAM [ARGS...]   (any MPI program instead, e.g. the
#                                           tests/distributed.rs binary with --nocapture)
#
# Prints the demo's key=value lines (comm_ms_per_step: time per step in the
# gradient allreduce), the hosts the ranks ran on, and the bytes that crossed
# the veth pair; exits non-zero if the run or a check fails. The namespaces are
# removed afterwards, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)/scripts
work=$(mktemp -d)
if [ "${1:-}" = "--run" ]; then
    shift
    program=("$(realpath "$1")" "${@:2}")
    check_final_loss=false
else
    steps=${1:-40}
    bin=target/release/examples/conv_net
    [ -x "$bin" ] || { echo "build it first: cargo build --release --features mpi --example conv_net" >&2; exit 1; }
    program=("$here/../$bin" --distributed --threads 1 --steps "$steps" --eval-every 100000 --out "$work/out")
    check_final_loss=true
fi

netns_down() {
    ip netns del mpih1 2>/dev/null || true
    ip netns del mpih2 2>/dev/null || true
}
trap 'netns_down; rm -rf "$work"' EXIT
netns_down

ip netns add mpih1
ip netns add mpih2
ip link add mpiva type veth peer name mpivb
ip link set mpiva netns mpih1
ip link set mpivb netns mpih2
ip -n mpih1 link set mpiva name mpi0
ip -n mpih2 link set mpivb name mpi0
ip -n mpih1 addr add 10.200.0.1/24 dev mpi0
ip -n mpih2 addr add 10.200.0.2/24 dev mpi0
for ns in mpih1 mpih2; do ip -n $ns link set lo up; ip -n $ns link set mpi0 up; done

printf '10.200.0.1 slots=1\n10.200.0.2 slots=1\n' > "$work/hosts"
printf 'rank 0=10.200.0.1 slot=0\nrank 1=10.200.0.2 slot=1\n' > "$work/rankfile"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RAYON_NUM_THREADS=1
t0=$(date +%s.%N)
ip netns exec mpih1 unshare --uts sh -c 'hostname host1 && exec "$@"' sh \
    timeout 600 mpirun -np 2 --hostfile "$work/hosts" --rankfile "$work/rankfile" \
        --mca plm_rsh_agent "$here/netns-rsh" \
        --mca pml ob1 --mca btl tcp,self \
        --mca btl_tcp_if_include mpi0 --mca oob_tcp_if_include mpi0 \
        --timeout 580 \
        -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM -x RAYON_NUM_THREADS \
        sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname)" >&2; exec "$0" "$@"' \
        "${program[@]}" \
    | tee "$work/log"
t1=$(date +%s.%N)
bytes=$(ip netns exec mpih1 cat /sys/class/net/mpi0/statistics/tx_bytes)
rbytes=$(ip netns exec mpih1 cat /sys/class/net/mpi0/statistics/rx_bytes)
awk -v a="$t0" -v b="$t1" -v tx="$bytes" -v rx="$rbytes" 'BEGIN {
    printf "two_hosts_wall_s=%.1f\nveth_tx_mib_host1=%.1f veth_rx_mib_host1=%.1f\n", b - a, tx / 1048576, rx / 1048576 }'
if $check_final_loss; then
    grep -q '^final_loss=' "$work/log" || { echo "two-host run printed no final_loss"; exit 1; }
fi
[ "$bytes" -gt 1000000 ] || { echo "too little traffic crossed the veth pair ($bytes bytes)"; exit 1; }
echo "two hosts: ok"
