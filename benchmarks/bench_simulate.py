"""Throughput of the curve simulator (issue 4 target: >= 50,000 curves/s on 2 cores).

Prints curves per second of ``simulate_curves`` for training draws (random
grid per call: 1-2 s frames, 45-120 frames, so 45-240 s of fine grid at
0.1 s) and for the test sets' grid (1 s frames over 80 s), with one and two
worker threads, and of the streaming dataset. Each figure is the best of a
few repeats, as wall-clock curves/s and as curves per CPU-second (all
threads counted; on a machine whose cores are taken by other processes the
second is the honest per-core figure, and two free cores give up to twice
it with ``workers=2``). The load of the machine is printed.

    python benchmarks/bench_simulate.py [--curves 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ctp_nipype.sims.simulate import simulate_curves


def mean_rate(make, n_curves, repeats):
    """Rates over the sum of all repeats (for calls that differ, e.g. a random grid each)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        make()
    return n_curves * repeats / (time.perf_counter() - start), n_curves * repeats / (time.process_time() - start_cpu)


def best_rate(make, n_curves, repeats):
    """Best wall-clock rate and best rate per CPU-second (all threads) over the repeats, curves/s."""
    wall, cpu = np.inf, np.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        make()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return n_curves / wall, n_curves / cpu


def line(label, workers, rates):
    wall, per_core = rates
    print(f"{label:52s} workers={workers}: {wall:9,.0f} curves/s wall, {per_core:9,.0f} per CPU-second")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=50_000, help="curves per call (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.curves
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    simulate_curves(1000, 0)  # warm-up
    for label, grid in (
        ("training draws, mean grid (1.5 s x 82 frames)", dict(frame_interval=1.5, n_frames=82)),
        ("training draws, longest grid (2 s x 120 frames)", dict(frame_interval=2.0, n_frames=120)),
        ("test-set grid (1 s x 80 frames)", dict(frame_interval=1.0, n_frames=80)),
    ):
        for workers in (1, 2):
            line(label, workers, best_rate(lambda: simulate_curves(n, 1, workers=workers, **grid), n, args.repeats))
    for workers in (1, 2):
        seeds = iter(range(10**6))
        line("training draws, random grid per call (mean of 6)", workers,
             mean_rate(lambda: simulate_curves(n, next(seeds), workers=workers), n, 6))

    from ctp_nipype.nn.dataset import SimulatedCurveStream

    batches = max(1, n // 1024)
    for per_grid in (1, 8):
        stream = SimulatedCurveStream(batch_size=1024, seed=0, n_batches=batches, batches_per_grid=per_grid)
        line(f"dataset stream, 1024 per batch, {per_grid} batch(es) per grid", 1,
             best_rate(lambda: sum(1 for _ in stream), batches * 1024, args.repeats))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
