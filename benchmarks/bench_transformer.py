"""Speed of the perfusion Transformer's inference path, step by step.

Prints voxels per second on the CPU (target >= 1,000 for 60 frames on 2
cores) for each step of the fast path, and, when a GPU is present, seconds for
one million voxels (target <= 5 s on one H100).

Steps measured (same architecture throughout: 3+3 layers, d_model 64, 16 heads):

1. ``nn.Transformer`` reference (the naive implementation, dim_feedforward 256);
2. our network, fp32, the AIF re-embedded for every batch (no cache);
3. + the decoder's AIF part cached once per scan (``encode_aif``);
4. + bfloat16 autocast on the CPU (when the CPU supports it);
5. the full ``estimate_curves`` (normalisation, batching, maps) with the best setting.

Run: ``python benchmarks/bench_transformer.py [--voxels 8192] [--frames 60] [--threads 2]``.
The numbers depend on the load of the machine; repeat on an idle one for claims.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def voxels_per_second(function, n_voxels, repeats=3):
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return n_voxels / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=8192)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--batch", type=int, default=512, help="voxels per batch (default: the CPU default of the package)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=None, help="weights file (default: shipped, else random)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ctp_nipype.nn.inference import estimate_curves, run_network
    from ctp_nipype.nn.model import PerfusionTransformer
    from ctp_nipype.nn.weights import load_model, shipped_weights_available

    n, t = args.voxels, args.frames
    rng = np.random.default_rng(0)
    times = np.arange(t, dtype=np.float32)
    aif = np.exp(-0.5 * ((times - 15) / 3) ** 2).astype(np.float32)
    tissue = (0.5 * rng.random((n, 1)) * np.exp(-0.5 * ((times - 20) / 5) ** 2) + 0.01 * rng.standard_normal((n, t))).astype(
        np.float32
    )
    model = load_model(args.weights) if (args.weights or shipped_weights_available()) else PerfusionTransformer().eval()
    print(f"CPU, {args.threads} threads, {t} frames, {n} voxels, batch {args.batch}")
    results = {}

    reference = torch.nn.Transformer(
        d_model=64, nhead=16, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=256, batch_first=True
    ).eval()

    def naive():
        with torch.inference_mode():
            for s in range(0, n, args.batch):
                x = torch.from_numpy(tissue[s : s + args.batch])[..., None].expand(-1, -1, 64)
                y = torch.from_numpy(aif)[None, :, None].expand(x.shape[0], -1, 64)
                reference(x, y)

    results["1 nn.Transformer reference"] = voxels_per_second(naive, n, args.repeats)

    t_times = torch.from_numpy(times)
    t_aif = torch.from_numpy(aif)

    def uncached():
        with torch.inference_mode():
            for s in range(0, n, args.batch):
                model(torch.from_numpy(tissue[s : s + args.batch]), t_aif, t_times)

    results["2 ours fp32, AIF per batch"] = voxels_per_second(uncached, n, args.repeats)

    def cached():
        run_network(model, aif, tissue, times, "cpu", args.batch)

    results["3 ours fp32, AIF cached"] = voxels_per_second(cached, n, args.repeats)

    def cached_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            run_network(model, aif, tissue, times, "cpu", args.batch)

    results["4 ours bf16 autocast, AIF cached"] = voxels_per_second(cached_bf16, n, args.repeats)

    def full():
        estimate_curves(aif * 300, tissue * 30, times, model=model, batch_size=args.batch)

    results["5 estimate_curves (default precision)"] = voxels_per_second(full, n, args.repeats)

    for name, value in results.items():
        print(f"{name:42s} {value:8.0f} voxels/s")

    if torch.cuda.is_available():
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
