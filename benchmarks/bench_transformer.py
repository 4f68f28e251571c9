"""Speed of the perfusion Transformer's inference path, step by step: today's path and the fused one in the same run.

Prints voxels per second on the CPU (issue 31's target: >= 2,500 for 60 frames on 2 threads) for each
step, in alternating rounds so that a change in the machine's speed hits every step alike (each step's
best and median round, and the fused path's speed-up over the module forward round by round), the load
average before and after, and the largest differences between the two paths' outputs; with a GPU,
seconds for one million voxels (target <= 2 s on one H100, issue 31).

Steps measured (same architecture throughout: 3+3 layers, d_model 64, 16 heads):

1. ``nn.Transformer`` reference (the naive implementation, dim_feedforward 256),
   a yardstick of the machine's speed on the day;
2. ``run_network(fused=False)``: the module forward (the reference and the path before the fused one),
   attention by ``blocked_attention`` (torch's softmax, one head at a time);
3. ``run_network(fused=False)``: the module forward with ``exp_attention`` (one exponential per score,
   one head at a time; the package's CPU path until 2026-12-07);
4. ``run_network``: the fused path (``ctp_nipype.nn.fused``, the package's default on the CPU);
5. bfloat16 autocast on the CPU (the module forward, which falls back to ``blocked_attention``);
6. the full ``estimate_curves`` (normalisation, batching, maps): the figure of the target.

Option ``--batch-sizes 8,32``: ``estimate_curves`` at other voxels per batch, in the same rounds.
Option ``--old-rev REV``: also the fused path as it was at git revision ``REV`` (``ctp_nipype/nn/fused.py`` read
with ``git show``), in the same rounds, and its largest differences from today's (e.g. ``--old-rev d5165c6``,
the fused path before its attention moved to numpy and ``exp2``).

Run: ``python benchmarks/bench_transformer.py [--voxels 4096] [--frames 60] [--threads 2] [--rounds 5]
[--device auto|cpu|cuda]``. ``--device cuda`` times one million voxels on the GPU only (an error
without one); ``cpu`` the CPU steps only; ``auto`` both when a GPU is present.
The numbers depend on the load of the machine; repeat on an idle one for claims.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def benchmark_curves(n_voxels, n_frames, seed=0):
    """A bolus AIF (peak 1) and noisy tissue curves of random amplitude (float32)."""
    rng = np.random.default_rng(seed)
    times = np.arange(n_frames, dtype=np.float32)
    aif = np.exp(-0.5 * ((times - 15) / 3) ** 2).astype(np.float32)
    tissue = 0.5 * rng.random((n_voxels, 1)) * np.exp(-0.5 * ((times - 20) / 5) ** 2)
    tissue = (tissue + 0.01 * rng.standard_normal((n_voxels, n_frames))).astype(np.float32)
    return times, aif, tissue


def alternating_rounds(functions, n_voxels, rounds):
    """Voxels per second of each function, one call of each per round after a warm-up call."""
    for function in functions.values():
        function()
    rates = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            rates[name].append(n_voxels / (time.perf_counter() - start))
    return rates


def print_rates(rates):
    print(f"{'step':46s} {'best':>8s} {'median':>8s}  voxels/s")
    for name, values in rates.items():
        print(f"{name:46s} {max(values):8.0f} {np.median(values):8.0f}")


def load_average():
    """The 1, 5 and 15 minute load averages, as a string."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_differences(model, aif, tissue, times, module_batch):
    """Largest differences between the fused path and the module forward: network outputs and maps."""
    from ctp_nipype.nn.inference import estimate_curves

    fused = estimate_curves(aif * 300, tissue * 30, times, model=model)
    module = estimate_curves(aif * 300, tissue * 30, times, model=model, batch_size=module_batch, fused=False)
    print("largest |fused - module forward| (largest |value|) on these curves: " + ", ".join(
        f"{key} {np.max(np.abs(fused[key] - module[key])):.1e} ({np.max(np.abs(module[key])):.3g})"
        for key in ("bad", "local_aif", "residue", "cbf", "cbv", "mtt")
    ))


def old_fused_step(rev, model, aif, tissue, times):
    """``run_network`` with the fused path of git revision ``rev``; prints its largest differences from today's."""
    from old_code import module_at

    from ctp_nipype.nn import inference

    old = module_at(rev, "ctp_nipype/nn/fused.py").FusedInference

    def run():
        today = inference.FusedInference
        inference.FusedInference = old
        try:
            return inference.run_network(model, aif, tissue, times, "cpu")
        finally:
            inference.FusedInference = today

    then, now = run(), inference.run_network(model, aif, tissue, times, "cpu")
    print(f"largest |fused path at {rev} - today's| (largest |value|): " + ", ".join(
        f"{key} {np.max(np.abs(then[key] - now[key])):.1e} ({np.max(np.abs(now[key])):.3g})" for key in now))
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", default="", help="comma-separated voxels per batch to compare")
    parser.add_argument("--old-rev", default=None, help="also time the fused path of this git revision")
    parser.add_argument("--weights", default=None, help="weights file (default: shipped, else random)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="cuda: time 1M voxels on the GPU (an error without one); cpu: the CPU steps only; "
                        "auto: both when a GPU is present")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here.")
    torch.set_num_threads(args.threads)

    from ctp_nipype.nn import model as network
    from ctp_nipype.nn.inference import default_batch_size, estimate_curves, run_network
    from ctp_nipype.nn.model import PerfusionTransformer
    from ctp_nipype.nn.weights import load_model, shipped_weights_available

    n, t = args.voxels, args.frames
    batch = default_batch_size(t, "cpu")
    module_batch = max(64, int(64 * min(1.0, (60.0 / t) ** 2)))  # the module forward's batches until 12-07
    times, aif, tissue = benchmark_curves(n, t)
    model = load_model(args.weights) if (args.weights or shipped_weights_available()) else PerfusionTransformer().eval()
    print(f"CPU, {args.threads} threads, {t} frames, {n} voxels, batch {batch} (package default; the module "
          f"forward's steps {module_batch}, its default until 12-07), {args.rounds} rounds, torch {torch.__version__}")

    reference = torch.nn.Transformer(
        d_model=64, nhead=16, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=256, batch_first=True
    ).eval()
    t_aif = torch.from_numpy(aif)

    def naive():
        with torch.inference_mode():
            for s in range(0, n, module_batch):
                x = torch.from_numpy(tissue[s : s + module_batch])[..., None].expand(-1, -1, 64)
                y = t_aif[None, :, None].expand(x.shape[0], -1, 64)
                reference(x, y)

    def softmax_attention(function):
        """``function`` with attention by blocked_attention (torch's softmax) instead of exp_attention."""

        def run():
            network.USE_EXP_ATTENTION = False
            try:
                function()
            finally:
                network.USE_EXP_ATTENTION = True

        return run

    def module_forward():
        return run_network(model, aif, tissue, times, "cpu", batch_size=module_batch, fused=False)

    def cached_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            run_network(model, aif, tissue, times, "cpu", batch_size=module_batch)

    module_step, fused_step = "3 module forward, exp_attention (until 12-07)", "4 fused path (package default)"
    steps = {
        "1 nn.Transformer reference": naive,
        "2 module forward, blocked_attention": softmax_attention(module_forward),
        module_step: module_forward,
        fused_step: lambda: run_network(model, aif, tissue, times, "cpu"),
        "5 module forward, bf16 autocast": cached_bf16,
        "6 estimate_curves (package default)": lambda: estimate_curves(aif * 300, tissue * 30, times, model=model),
    }
    if args.old_rev:
        steps[f"  fused path at {args.old_rev}"] = old_fused_step(args.old_rev, model, aif, tissue, times)
    for size in [int(s) for s in args.batch_sizes.split(",") if s.strip()]:
        steps[f"  estimate_curves, batch {size}"] = (
            lambda size=size: estimate_curves(aif * 300, tissue * 30, times, model=model, batch_size=size)
        )
    if args.device != "cuda":
        print_differences(model, aif, tissue, times, module_batch)
        print(f"load average before the rounds: {load_average()}")
        rates = alternating_rounds(steps, n, args.rounds)
        print_rates(rates)
        ratios = np.array(rates[fused_step]) / np.array(rates[module_step])
        print(f"fused path / module forward (exp_attention), round by round: "
              f"{' '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}x")
        print(f"load average after the rounds: {load_average()}")

    if args.device != "cpu" and torch.cuda.is_available():
        gpu_model = model.to("cuda")
        big = 1_000_000
        tissue_big = np.tile(tissue, (big // n + 1, 1))[:big]
        estimate_curves(aif * 300, tissue_big[:50000] * 30, times, model=gpu_model, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        estimate_curves(aif * 300, tissue_big * 30, times, model=gpu_model, device="cuda")
        torch.cuda.synchronize()
        print(f"GPU {torch.cuda.get_device_name()}: {time.perf_counter() - start:.2f} s for 1M voxels")
    else:
        print("GPU: none available, the 1M-voxel timing was not run")


if __name__ == "__main__":
    main()
