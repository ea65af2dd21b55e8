#!/usr/bin/env bash
# adgraph vs PyTorch, workload by workload, interleaved: for each workload the
# PyTorch script runs, then adgraph's bench, so both see the same state of a
# shared machine (its speed drifts by tens of percent over minutes; a run of
# all of one followed by all of the other compares two different machines).
#
#   scripts/compare_torch.sh [IDS] [PYTHON]
#
# IDS defaults to W1,W2,W3,W4,W4inf,W5,W6; PYTHON to /tmp/torch-venv/bin/python
# (python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install "numpy<2" torch).
# Prints both raw lines per workload, then a table of the ratios
# (adgraph's median step time over PyTorch's; for W4inf, PyTorch's images/s
# over adgraph's, so below 1 is better in every row).
set -euo pipefail
cd "$(dirname "$0")/.."

ids=${1:-W1,W2,W3,W4,W4inf,W5,W6}
python=${2:-/tmp/torch-venv/bin/python}
torch_script=../shared/bench/torch_workloads.py
[ -f "$torch_script" ] || { echo "no $torch_script (../shared beside the repository)" >&2; exit 1; }
[ -x "$python" ] || { echo "no python with torch at $python" >&2; exit 1; }

cargo build --release --quiet --example bench
bench=target/release/examples/bench

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
lines=()
IFS=, read -ra list <<<"$ids"
for id in "${list[@]}"; do
    # The small models take well under a millisecond a step: 50 steps are over
    # in 20 ms, shorter than the machine's hiccups, so they get 1,000.
    case $id in W1 | W2 | W3) steps=(--steps 1000 --warmup 100) ;; *) steps=() ;; esac
    t=$("$python" "$torch_script" --only "$id" "${steps[@]}" | grep "^$id torch ")
    a=$("$bench" --only "$id" "${steps[@]}" | grep "^$id adgraph ")
    echo "$t"
    echo "$a"
    lines+=("$t" "$a")
done

# field VALUE of KEY=VALUE in a line
field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }
echo
echo "| workload | PyTorch | adgraph | ratio |"
echo "|---|---:|---:|---:|"
for ((i = 0; i < ${#lines[@]}; i += 2)); do
    t=${lines[i]} a=${lines[i + 1]}
    id=${t%% *}
    if [ "$id" = W4inf ]; then
        ti=$(field "$t" images_per_s) ai=$(field "$a" images_per_s)
        echo "| $id | $ti img/s | $ai img/s | $(awk -v t="$ti" -v a="$ai" 'BEGIN { printf "%.2f", t / a }') |"
    else
        tm=$(field "$t" step_ms_median) am=$(field "$a" step_ms_median)
        echo "| $id | $tm ms | $am ms | $(awk -v t="$tm" -v a="$am" 'BEGIN { printf "%.2f", a / t }') |"
    fi
done
