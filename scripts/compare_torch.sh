#!/usr/bin/env bash
# adgraph vs PyTorch, workload by workload, interleaved: for each workload the
# PyTorch script runs, then adgraph's bench, so both see the same state of a
# shared machine (its speed drifts by tens of percent over minutes; a run of
# all of one followed by all of the other compares two different machines).
#
# The machine also has slow phases of a few seconds (everything 1.5x slower,
# whichever program runs), so each workload runs ROUNDS times on each side,
# alternating, and the table compares the median of each side's round medians.
#
#   scripts/compare_torch.sh [IDS] [PYTHON] [ROUNDS] [BASELINE_BENCH]
#
# BASELINE_BENCH, when given, is the bench binary of another build of adgraph
# (e.g. the last release, built in a worktree): it runs in the same rounds,
# right after this build's, and the table gains its median and ratio, so a
# change is measured against its baseline and PyTorch under the same load.
#
# IDS defaults to W1,W2,W3,W4,W4inf,W5,W6; PYTHON to /tmp/torch-venv/bin/python
# (python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install "numpy<2" torch);
# ROUNDS to 3 (three times that for the sub-millisecond W1-W3). Prints every raw line, then a table of the ratios (adgraph's
# median step time over PyTorch's; for W4inf, PyTorch's images/s over
# adgraph's, so below 1 is better in every row).
set -euo pipefail
cd "$(dirname "$0")/.."

ids=${1:-W1,W2,W3,W4,W4inf,W5,W6}
python=${2:-/tmp/torch-venv/bin/python}
rounds=${3:-3}
baseline=${4:-}
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "no baseline bench at $baseline" >&2; exit 1; }
torch_script=../shared/bench/torch_workloads.py
[ -f "$torch_script" ] || { echo "no $torch_script (../shared beside the repository)" >&2; exit 1; }
[ -x "$python" ] || { echo "no python with torch at $python" >&2; exit 1; }

cargo build --release --quiet --example bench
bench=target/release/examples/bench

# field VALUE of KEY=VALUE in a line
field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }
# the median of the numbers given
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $rounds rounds ($((3 * rounds)) for W1-W3)"
rows=()
IFS=, read -ra list <<<"$ids"
for id in "${list[@]}"; do
    # The small models take well under a millisecond a step: 50 steps are over
    # in 20 ms, shorter than the machine's hiccups, so they get 1,000.
    # Such a run is also shorter than the machine's slow phases, so one lands
    # wholly inside or outside one: they get three times the rounds, for a
    # median that does not hang on two or three of them.
    case $id in
    W1 | W2 | W3) steps=(--steps 1000 --warmup 100) n_rounds=$((3 * rounds)) ;;
    *) steps=() n_rounds=$rounds ;;
    esac
    key=step_ms_median
    [ "$id" = W4inf ] && key=images_per_s
    tv=() av=() bv=()
    for ((r = 1; r <= n_rounds; r++)); do
        t=$("$python" "$torch_script" --only "$id" "${steps[@]}" | grep "^$id torch ")
        a=$("$bench" --only "$id" "${steps[@]}" | grep "^$id adgraph ")
        echo "$t"
        echo "$a"
        tv+=("$(field "$t" $key)")
        av+=("$(field "$a" $key)")
        if [ -n "$baseline" ]; then
            b=$("$baseline" --only "$id" "${steps[@]}" | grep "^$id adgraph ")
            echo "$b (baseline)"
            bv+=("$(field "$b" $key)")
        fi
    done
    rows+=("$id $(median "${tv[@]}") $(median "${av[@]}") $([ -z "$baseline" ] || median "${bv[@]}")")
done

echo
if [ -n "$baseline" ]; then
    echo "| workload | PyTorch | adgraph | ratio | baseline | baseline ratio |"
    echo "|---|---:|---:|---:|---:|---:|"
else
    echo "| workload | PyTorch | adgraph | ratio |"
    echo "|---|---:|---:|---:|"
fi
for row in "${rows[@]}"; do
    read -r id t a b <<<"$row"
    if [ "$id" = W4inf ]; then
        unit="img/s"
        ratio() { awk -v t="$t" -v a="$1" 'BEGIN { printf "%.2f", t / a }'; }
    else
        unit="ms"
        ratio() { awk -v t="$t" -v a="$1" 'BEGIN { printf "%.2f", a / t }'; }
    fi
    line="| $id | $t $unit | $a $unit | $(ratio "$a") |"
    [ -n "$baseline" ] && line="$line $b $unit | $(ratio "$b") |"
    echo "$line"
done
