#!/usr/bin/env bash
# A rank that dies stops the job, and the run resumes from its last checkpoint
# with another number of ranks. From the repository root, after
#   cargo build --release --features mpi --example conv_net
#
#   scripts/mpi_fault_test.sh
#
# 1. Starts the conv net on 2 ranks (shared memory), saving a checkpoint every 10 steps.
# 2. Once a checkpoint exists, SIGKILLs rank 1 and times how long the job takes to
#    stop (it must stop, with an error, within 60 s).
# 3. Resumes from the checkpoint on 1 rank for 10 more steps, then on 2 ranks for
#    10 more, checking that each says where it resumed and ends at the right step.
# Prints fault_stop_s=..., the exit codes and mpirun's message; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/examples/conv_net
[ -x "$bin" ] || { echo "build it first: cargo build --release --features mpi --example conv_net" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=vader,self
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ckpt=$work/run.safetensors
common=(--distributed --threads 1 --eval-every 100000 --out "$work/out" --save "$ckpt" --save-every 10)

mpirun -np 2 --timeout 300 "$bin" "${common[@]}" --steps 100000 >"$work/log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do
    [ -s "$ckpt" ] && break
    kill -0 "$launcher" 2>/dev/null || { cat "$work/log"; echo "the job ended before its first checkpoint"; exit 1; }
    sleep 0.1
done
[ -s "$ckpt" ] || { echo "no checkpoint after 60 s"; exit 1; }
sleep 1
# The ranks are mpirun's children; rank 1 is the one whose environment says so.
victim=""
for pid in $(pgrep -P "$launcher"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then
        victim=$pid
    fi
done
[ -n "$victim" ] || { echo "rank 1 not found among mpirun's children"; exit 1; }
t0=$(date +%s.%N)
kill -KILL "$victim"
echo "killed rank 1 (pid $victim)"
code=0
for _ in $(seq 1 600); do
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$launcher" 2>/dev/null; then
    echo "the job still runs 60 s after rank 1 died"
    kill -TERM "$launcher"
    exit 1
fi
wait "$launcher" || code=$?
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "fault_stop_s=%.2f\n", b - a }'
echo "fault_exit_code=$code"
grep -i -m3 'killed\|signal\|abort' "$work/log" || true
[ "$code" -ne 0 ] || { echo "the job exited 0 after losing a rank"; exit 1; }

# The step it holds: metadata "step" in the safetensors header (JSON after an 8-byte length).
step=$(head -c 1000000 "$ckpt" | grep -ao '"step":"[0-9]*"' | head -1 | grep -o '[0-9][0-9]*')
echo "checkpoint_step=$step"
for ranks in 1 2; do
    target=$((step + 10))
    out=$(mpirun -np "$ranks" --timeout 300 "$bin" "${common[@]}" --load "$ckpt" --steps "$target")
    echo "$out" | grep -E '^(loaded|steps|final_loss)' | sed "s/^/resume on $ranks rank(s): /"
    echo "$out" | grep -q "^loaded: training state from .* at step $step\$" \
        || { echo "resume on $ranks rank(s) did not load step $step"; exit 1; }
    echo "$out" | grep -qx "steps=$target" || { echo "resume on $ranks rank(s) did not reach step $target"; exit 1; }
    step=$target
done
echo "faults: ok"
