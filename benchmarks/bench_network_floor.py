"""The most the network's CPU inference can run at on this machine: its operations timed alone, summed.

Issue 31 asks for >= 2,500 voxels/s (60 frames, 2 threads). This script measures, in one run, how close the
package's fused path (:mod:`ctp_nipype.nn.fused`) is to the sum of its own operations, and so what is left to
gain without changing the network or its float32 arithmetic:

1. the fused path's voxels/s through :func:`~ctp_nipype.nn.inference.run_network` on one thread and on
   ``--threads`` threads, in alternating rounds (the ratio is what the second core buys on this machine);
2. every operation of one batch of the fused path, recorded as it runs (torch's operations by a
   ``TorchDispatchMode``, numpy's matrix products and exponentials by a stand-in for the module's ``np``),
   then each replayed alone many times on the same arguments (same shapes and memory layout, its data hot in
   the cache, no Python between the calls), less the cost of calling an operation at all (timed on a
   one-element add). Views and allocations are left out; an in-place GELU is replayed as its out-of-place
   twin (repeating it in place would walk its values into denormals), an in-place exponential into a
   separate buffer from a copy of its input;
3. the sum per curve, by kind (matrix products, attention products, exponentials, layer norms, GELU, the
   rest), and the bound it gives: one thread at most ``1 / sum`` voxels/s, ``--threads`` threads at most that
   times the measured ratio of step 1.

The bound is what these operations cost as torch and numpy run them on this CPU; a faster kernel for one of
them (or other arithmetic: bfloat16, int8) would move it, the package's Python and memory traffic between
operations would not.

Run: ``python benchmarks/bench_network_floor.py [--voxels 1024] [--frames 60] [--threads 2] [--rounds 5]
[--target 2500]``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench_transformer import alternating_rounds, benchmark_curves, load_average

#: the kinds an operation is counted under, by its name (torch's aten name or numpy's function)
KINDS = {
    "addmm": "matrix products (torch)",
    "addmm_": "matrix products (torch)",
    "mm": "matrix products (torch)",
    "matmul": "attention products (numpy)",
    "exp2": "exponentials (numpy)",
    "layer_norm": "layer norms (torch)",
    "gelu": "GELU (torch)",
    "gelu_": "GELU (torch)",
}
OTHER = "the rest (torch: adds, division, pad, repeat, sort, softplus, mean)"


class _Recorder(TorchDispatchMode):
    """Keeps every non-view, non-allocating aten operation with its arguments, as called."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        if not func.is_view and name not in ("empty", "empty_strided", "zeros", "ones", "new_zeros", "detach"):
            if name == "gelu_":  # replayed out of place: in place, repeated calls walk the values to denormals
                replay = (torch.ops.aten.gelu.default, (args[0].clone(),), dict(kwargs))
            else:
                replay = (func, args, kwargs)
            self.record.append(("torch", name, replay))
        return func(*args, **kwargs)


class _NumpyRecorder:
    """Stands in for the fused module's ``np``: records ``matmul`` and ``exp2`` calls, passes everything on."""

    def __init__(self, record):
        self.record = record

    def matmul(self, a, b, out=None):
        self.record.append(("numpy", "matmul", (np.matmul, (a, b), {"out": out})))
        return np.matmul(a, b, out=out)

    def exp2(self, x, out=None):
        # replayed from a copy of its input into a buffer of its own: in place, repeated calls overflow
        self.record.append(("numpy", "exp2", (np.exp2, (x.copy(),), {"out": np.empty_like(x)})))
        return np.exp2(x, out=out)

    def __getattr__(self, name):
        return getattr(np, name)


def record_one_batch(fast, tissue, times, cache, first_queries):
    """The operations of one call of the fused path, in order: ``(library, name, (function, args, kwargs))``."""
    from ctp_nipype.nn import fused

    record = []
    with torch.inference_mode():
        fused.np = _NumpyRecorder(record)
        try:
            with _Recorder(record):
                fast(tissue, None, times, cache, first_queries)
        finally:
            fused.np = np
    return record


def time_alone(function, args, kwargs, calls=40, repeats=5):
    """Seconds per call of ``function(*args, **kwargs)`` repeated back to back (the best of ``repeats``)."""
    for _ in range(3):
        function(*args, **kwargs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function(*args, **kwargs)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def call_overhead():
    """Seconds to call an aten operation and a numpy ufunc at all: a one-element add, in place."""
    one, array = torch.zeros(1), np.zeros(1, np.float32)
    with torch.inference_mode():
        torch_call = time_alone(torch.ops.aten.add_.Tensor, (one, one), {}, calls=2000)
    numpy_call = time_alone(np.add, (array, array), {"out": array}, calls=2000)
    return {"torch": torch_call, "numpy": numpy_call}


def operation_floor(record, batch):
    """Seconds per curve by kind: each operation alone, less the cost of a call."""
    overhead = call_overhead()
    by_kind, counts = defaultdict(float), defaultdict(int)
    with torch.inference_mode():
        for library, name, (function, args, kwargs) in record:
            seconds = time_alone(function, args, kwargs)
            kind = KINDS.get(name, OTHER)
            by_kind[kind] += max(0.0, seconds - overhead[library]) / batch
            counts[kind] += 1
    return by_kind, counts, overhead


def fused_rates(model, aif, tissue, times, threads, rounds):
    """Voxels/s of ``run_network`` (the fused path) on one thread and on ``threads``, in alternating rounds
    (:func:`bench_transformer.alternating_rounds`; each call sets its thread count first)."""
    from ctp_nipype.nn.inference import run_network

    def on(count):
        def run():
            torch.set_num_threads(count)
            run_network(model, aif, tissue, times, "cpu")
        return run

    rates = alternating_rounds({1: on(1), threads: on(threads)}, len(tissue), rounds)
    return {count: np.array(values) for count, values in rates.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", type=float, default=2500.0, help="voxels/s on --threads threads (issue 31)")
    parser.add_argument("--weights", default=None, help="weights file (default: shipped, else random)")
    args = parser.parse_args(argv)
    if args.threads < 2:
        raise SystemExit("--threads must be 2 or more: the script compares one thread with several.")

    from threadpoolctl import threadpool_limits

    from ctp_nipype.nn.fused import FusedInference
    from ctp_nipype.nn.inference import default_batch_size
    from ctp_nipype.nn.model import PerfusionTransformer
    from ctp_nipype.nn.weights import load_model, shipped_weights_available

    model = load_model(args.weights) if (args.weights or shipped_weights_available()) else PerfusionTransformer().eval()
    times, aif, tissue = benchmark_curves(args.voxels, args.frames)
    batch = default_batch_size(args.frames, "cpu")
    print(f"{args.frames} frames, {args.voxels} voxels, batch {batch}, torch {torch.__version__}, "
          f"load average before: {load_average()}")

    rates = fused_rates(model, aif, tissue, times, args.threads, args.rounds)
    one, many = np.median(rates[1]), np.median(rates[args.threads])
    scaling = np.median(rates[args.threads] / rates[1])
    print(f"fused path (run_network), medians of {args.rounds} alternating rounds: one thread {one:,.0f} voxels/s "
          f"({1e3 / one:.3f} ms a curve), {args.threads} threads {many:,.0f} (best {rates[args.threads].max():,.0f}); "
          f"{args.threads} threads / one, round by round: median {scaling:.2f}x")

    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        t = torch.as_tensor(times)
        fast = FusedInference(model)
        with torch.inference_mode():
            cache = model.encode_aif(torch.as_tensor(aif), t)
            first_queries = fast.shared_queries(cache)
        record = record_one_batch(fast, torch.as_tensor(tissue[:batch]), t, cache, first_queries)
        by_kind, counts, overhead = operation_floor(record, batch)
    floor = sum(by_kind.values())
    print(f"\nthe fused path's {len(record)} operations of one batch, each alone on one thread (call cost removed: "
          f"torch {overhead['torch'] * 1e6:.1f} us, numpy {overhead['numpy'] * 1e6:.1f} us):")
    print(f"{'kind':70s} {'ops':>4s} {'ms a curve':>11s}")
    for kind, seconds in sorted(by_kind.items(), key=lambda item: -item[1]):
        print(f"{kind:70s} {counts[kind]:4d} {seconds * 1e3:11.3f}")
    print(f"{'sum':70s} {len(record):4d} {floor * 1e3:11.3f}")
    print(f"\nthe fused path spends {1e3 / one:.3f} ms a curve on one thread, {(1 / one) / floor:.2f}x the sum of its "
          f"operations")
    bound_one, bound_many = 1 / floor, scaling / floor
    print(f"bound: one thread {bound_one:,.0f} voxels/s, {args.threads} threads {bound_many:,.0f} "
          f"(the sum, times the measured {scaling:.2f}x); target {args.target:,.0f}: "
          + ("within the bound" if bound_many >= args.target else
             f"above the bound: the operations alone would need to run {args.target / bound_many:.2f}x faster"))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
