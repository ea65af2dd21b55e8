#!/usr/bin/env python3
"""Images per second of the conv net demo: 1 rank x 1 thread, 1 rank x 2 threads and
2 ranks x 1 thread (shared memory), interleaved over ROUNDS rounds (the machine drifts).

    python3 scripts/mpi_scaling.py [ROUNDS] [STEPS]      (default 3 rounds of 60 steps)

Build first: cargo build --release --features mpi --example conv_net. Each run trains
STEPS steps of the global batch 50 (no test evaluation); the line per run gives the
demo's images_per_s and comm_ms_per_step and foreign_cpu: the CPU that other processes
used meanwhile, as a share of all cores (from /proc/stat minus this run's own CPU time).
The summary gives the median of each configuration and the 2-rank speed-up.
"""
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/examples/conv_net")


def machine_ticks():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run(ranks, threads, steps):
    cmd = [BIN, "--threads", str(threads), "--steps", str(steps), "--eval-every", "1000000",
           "--out", "/tmp/mpi_scaling_out"]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--mca", "pml", "ob1", "--mca", "btl", "vader,self",
               "--bind-to", "core"] + cmd + ["--distributed"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    busy0, total0 = machine_ticks()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_ticks()
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    hz = os.sysconf("SC_CLK_TCK")
    own = (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) * hz
    total = max(total1 - total0, 1)
    foreign = max(0.0, (busy1 - busy0 - own) / total * 100)
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and " " not in line)
    return float(values["images_per_s"]), values.get("comm_ms_per_step", "n/a"), foreign


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    configs = [(1, 1), (1, 2), (2, 1)]
    results = {c: [] for c in configs}
    for r in range(rounds):
        for ranks, threads in configs:
            ips, comm, foreign = run(ranks, threads, steps)
            results[(ranks, threads)].append(ips)
            print(f"round {r + 1}: ranks={ranks} threads={threads} images_per_s={ips:.0f} "
                  f"comm_ms_per_step={comm} foreign_cpu={foreign:.0f}%", flush=True)
    med = {c: statistics.median(v) for c, v in results.items()}
    for (ranks, threads), m in med.items():
        print(f"median ranks={ranks} threads={threads} images_per_s={m:.0f}")
    print(f"speedup_2ranks_vs_1rank_1thread={med[(2, 1)] / med[(1, 1)]:.2f} "
          f"speedup_1rank_2threads_vs_1thread={med[(1, 2)] / med[(1, 1)]:.2f}")


if __name__ == "__main__":
    main()
