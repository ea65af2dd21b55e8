#!/usr/bin/env python3
"""Images per second of the conv net demo: 1 rank x 1 thread, 1 rank x 2 threads and
2 ranks x 1 thread (shared memory), interleaved over ROUNDS rounds (the machine drifts).

    python3 scripts/mpi_scaling.py [ROUNDS] [STEPS] [--weak] [--balance] [--ceiling] [--measure-wait]

(default 3 rounds of 60 steps). Build first: cargo build --release --features mpi
--example conv_net.

Strong scaling (the required figure): every configuration trains STEPS steps of the
global batch 50 (2 ranks: 25 rows each), no test evaluation. With --weak, each round
also runs 2 ranks x 1 thread on the global batch 100 (50 rows per rank, as one rank
of batch 50), printed and summarised apart as weak scaling. With --balance, each round
also runs 2 ranks x 1 thread on the global batch 50 with conv_net --balance (rows split by
the ranks' speeds), summarised apart. With --ceiling, each round also runs two
independent one-thread processes of the demo at batch 25 (no MPI, no communication, each
pinned to its own core) and sums their images per second: what this machine's two cores
give two copies of the work with no synchronisation at all, the ceiling of any
data-parallel run, and how far from it the 2-rank runs are. With --measure-wait the
2-rank runs time apart each rank's wait for the other before the gradient
communication (conv_net --measure-wait: a barrier per step, so not for the required
figure).

The line per run gives the demo's images_per_s, the mean forward_ms, backward_ms
and update_ms of a step (update: the optimizer, with the gradient communication when
distributed), comm_ms_per_step (the gradient communication), and foreign_cpu: the
CPU that other processes used meanwhile, as a share of all cores (from /proc/stat
minus this run's own CPU time). The summary gives the median of each configuration
and the speed-ups against 1 rank x 1 thread: the ratio of the medians, and the median
of the per-round ratios (each against the same round's 1 rank x 1 thread run, which
cancels the machine's slow phases of minutes).
"""
import os
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/examples/conv_net")
FIELDS = ["forward_ms", "backward_ms", "update_ms", "comm_ms_per_step", "comm_wait_ms_per_rank"]


def machine_ticks():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def foreign_cpu(work):
    """`work()`'s result, and the CPU that other processes used meanwhile, as a share of all
    cores (from /proc/stat minus the CPU time of this script's children)."""
    busy0, total0 = machine_ticks()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = work()
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    own = (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) * hz
    return result, max(0.0, (busy1 - busy0 - own) / max(total1 - total0, 1) * 100)


def key_values(cmd, out):
    """The `key=value` lines of a finished demo run; exits with its output if it failed."""
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and " " not in line)


def run(ranks, threads, batch, steps, measure_wait, balance=False):
    cmd = [BIN, "--threads", str(threads), "--steps", str(steps), "--batch", str(batch),
           "--eval-every", "1000000", "--out", "/tmp/mpi_scaling_out"]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--mca", "pml", "ob1", "--mca", "btl", "vader,self",
               "--bind-to", "core"] + cmd + ["--distributed"]
        if measure_wait:
            cmd.append("--measure-wait")
        if balance:
            cmd.append("--balance")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out, foreign = foreign_cpu(
        lambda: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200))
    values = key_values(cmd, out)
    detail = " ".join(f"{k}={values.get(k, 'n/a')}" for k in FIELDS)
    return float(values["images_per_s"]), detail, foreign


def run_pair(steps):
    """Two independent 1-thread processes at batch 25, pinned to cores 0 and 1 (the
    ceiling): the sum of their images per second, and the foreign CPU meanwhile."""
    def both():
        procs = []
        for core in (0, 1):
            cmd = [BIN, "--threads", "1", "--steps", str(steps), "--batch", "25",
                   "--eval-every", "1000000", "--out", f"/tmp/mpi_scaling_out{core}"]
            procs.append((cmd, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=lambda c=core: os.sched_setaffinity(0, {c}))))
        total = 0.0
        for cmd, p in procs:
            stdout, stderr = p.communicate(timeout=1200)
            done = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
            total += float(key_values(cmd, done)["images_per_s"])
        return total

    total, foreign = foreign_cpu(both)
    return total, "(two independent processes of batch 25, summed)", foreign


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    weak = "--weak" in sys.argv
    measure_wait = "--measure-wait" in sys.argv
    balance = "--balance" in sys.argv
    ceiling = "--ceiling" in sys.argv
    rounds = int(args[0]) if len(args) > 0 else 3
    steps = int(args[1]) if len(args) > 1 else 60
    # (label, ranks, threads, global batch)
    configs = [("strong", 1, 1, 50), ("strong", 1, 2, 50), ("strong", 2, 1, 50)]
    if weak:
        configs.append(("weak", 2, 1, 100))
    if balance:
        configs.append(("balanced", 2, 1, 50))
    if ceiling:
        configs.append(("ceiling", 2, 1, 50))
    results = {c: [] for c in configs}
    for r in range(rounds):
        for c in configs:
            label, ranks, threads, batch = c
            if label == "ceiling":
                ips, detail, foreign = run_pair(steps)
            else:
                ips, detail, foreign = run(ranks, threads, batch, steps, measure_wait,
                                           balance=label == "balanced")
            results[c].append(ips)
            print(f"round {r + 1}: {label} ranks={ranks} threads={threads} global_batch={batch} "
                  f"images_per_s={ips:.0f} {detail} foreign_cpu={foreign:.0f}%", flush=True)
    med = {c: statistics.median(v) for c, v in results.items()}
    for (label, ranks, threads, batch), m in med.items():
        print(f"median {label} ranks={ranks} threads={threads} global_batch={batch} images_per_s={m:.0f}")
    base_key = ("strong", 1, 1, 50)
    base = med[base_key]

    def speedup(key):
        """Ratio of the medians, and median of the per-round ratios."""
        per_round = [v / b for v, b in zip(results[key], results[base_key])]
        return f"{med[key] / base:.2f} (per round: median {statistics.median(per_round):.2f})"

    print(f"strong scaling (global batch 50): "
          f"speedup_2ranks_vs_1rank_1thread={speedup(('strong', 2, 1, 50))} "
          f"speedup_1rank_2threads_vs_1thread={speedup(('strong', 1, 2, 50))}")
    if balance:
        print(f"strong scaling, balanced shares: "
              f"speedup_2ranks_vs_1rank_1thread={speedup(('balanced', 2, 1, 50))}")
    if ceiling:
        print(f"ceiling, two independent processes of batch 25: "
              f"speedup_vs_1rank_1thread={speedup(('ceiling', 2, 1, 50))}")
        for key, name in [(("strong", 2, 1, 50), "even"), (("balanced", 2, 1, 50), "balanced")]:
            if key in results:
                share = [v / c for v, c in zip(results[key], results[("ceiling", 2, 1, 50)])]
                print(f"2 ranks x 1 thread ({name}) against the ceiling: per round: median "
                      f"{statistics.median(share):.3f}")
    if weak:
        print(f"weak scaling (50 rows per rank, global batch 100): "
              f"speedup_2ranks_vs_1rank_1thread={speedup(('weak', 2, 1, 100))}")


if __name__ == "__main__":
    main()
