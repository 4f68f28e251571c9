"""ONNX Runtime and OpenVINO against the package's torch path for the network's CPU inference, in the same rounds.

Exports the network with one scan's AIF and frame times built in (what every voxel of a scan shares, so that
the runtimes' constant folding computes the decoder's AIF part once, as ``run_network``'s cache does), then
times, alternating round by round on the same curves (``bench_transformer.benchmark_curves``: 60 frames):

1. ``run_network`` (torch: the fused CPU path of ``ctp_nipype.nn.fused``; threads as the package runs them);
2. ONNX Runtime, ``intra_op_num_threads`` = the same thread count, whole batch of voxels per call;
3. ONNX Runtime with the voxels in batches of the package's size;
4. OpenVINO (when installed: ``pip install openvino``), the same ONNX file compiled for the CPU in float32
   (``INFERENCE_PRECISION_HINT f32``: on CPUs with AVX512-BF16 it would otherwise run in bfloat16), the same
   thread count, batches of 64 voxels, one stream (latency) and two streams (throughput, asynchronous).

and prints voxels/s (best, median) and the largest difference of each output from the torch path. The issue's
rule: adopt a runtime only if >= 1.3x faster with outputs equal to 1e-4.

    python benchmarks/onnx_runtime.py [--voxels 4096] [--frames 60] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_transformer import alternating_rounds, benchmark_curves, print_rates


class SharedAIFNetwork(torch.nn.Module):
    """The network with one AIF and one frame-time axis as constants: tissue in, three outputs out."""

    def __init__(self, model, aif, frame_times):
        super().__init__()
        self.model = model
        self.register_buffer("aif", torch.as_tensor(aif, dtype=torch.float32))
        self.register_buffer("frame_times", torch.as_tensor(frame_times, dtype=torch.float32))

    def forward(self, tissue):
        out = self.model(tissue, aif=self.aif, frame_times=self.frame_times)
        return out["local_aif"], out["residue"], out["bad"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    from ctp_nipype.nn.inference import default_batch_size, run_network
    from ctp_nipype.nn.weights import load_model

    times, aif, tissue = benchmark_curves(args.voxels, args.frames)
    model = load_model()
    wrapped = SharedAIFNetwork(model, aif, times).eval()
    path = Path(tempfile.mkdtemp()) / "network.onnx"
    start = time.perf_counter()
    torch.onnx.export(wrapped, (torch.from_numpy(tissue[:64]),), str(path), input_names=["tissue"],
                      output_names=["local_aif", "residue", "bad"], dynamic_axes={"tissue": {0: "voxels"}},
                      dynamo=False, opset_version=17)
    print(f"exported in {time.perf_counter() - start:.1f} s: {path.stat().st_size / 1e6:.1f} MB; onnxruntime "
          f"{ort.__version__}, torch {torch.__version__}, {args.threads} threads, {args.frames} frames, "
          f"{args.voxels} voxels, {args.rounds} rounds")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    batch = default_batch_size(args.frames, "cpu")

    def onnx_whole():
        return session.run(None, {"tissue": tissue})

    def onnx_batches():
        return [session.run(None, {"tissue": tissue[s : s + batch]}) for s in range(0, len(tissue), batch)]

    reference = run_network(model, aif, tissue, times, "cpu")
    got = dict(zip(("local_aif", "residue", "bad"), onnx_whole()))
    for name, values in got.items():
        print(f"largest |ONNX Runtime - torch| of {name}: {np.max(np.abs(values - reference[name])):.2e} "
              f"(largest value {np.max(np.abs(reference[name])):.3g})")
    steps = {
        "torch run_network (package path)": lambda: run_network(model, aif, tissue, times, "cpu"),
        "ONNX Runtime, all voxels per call": onnx_whole,
        f"ONNX Runtime, batches of {batch}": onnx_batches,
    }
    steps.update(openvino_steps(path, tissue, args.threads, reference))
    rates = alternating_rounds(steps, args.voxels, args.rounds)
    print_rates(rates)
    torch_median = np.median(rates["torch run_network (package path)"])
    for name in list(rates)[1:]:
        print(f"{name}: {np.median(rates[name]) / torch_median:.2f}x the torch path (medians)")


def openvino_steps(path, tissue, threads, reference, batch=64):
    """OpenVINO's CPU runs of the exported network (float32), one and two streams, if OpenVINO is installed."""
    try:
        import openvino as ov
    except ImportError:
        print("OpenVINO is not installed (pip install openvino): not timed")
        return {}
    n = len(tissue)
    if n % batch:
        print(f"OpenVINO: --voxels must be a multiple of {batch} (compiled for one batch size): not timed")
        return {}
    core = ov.Core()
    steps = {}
    for streams in (1, 2):
        network = core.read_model(str(path))
        network.reshape({"tissue": [batch, tissue.shape[1]]})
        compiled = core.compile_model(network, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams,
            "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
        })
        def run(compiled=compiled, streams=streams):
            found = {}
            queue = ov.AsyncInferQueue(compiled, streams)
            queue.set_callback(lambda request, start: found.__setitem__(
                start, [request.get_output_tensor(i).data.copy() for i in range(3)]))
            for start in range(0, n, batch):
                queue.start_async({0: tissue[start : start + batch]}, start)
            queue.wait_all()
            return [np.concatenate([found[s][i] for s in sorted(found)]) for i in range(3)]

        for name, values in zip(("local_aif", "residue", "bad"), run()):
            difference = np.max(np.abs(values - reference[name]))
            verdict = "" if difference <= 1e-4 * np.max(np.abs(reference[name])) else " NOT EQUAL to 1e-4"
            print(f"largest |OpenVINO ({streams} stream{'s' * (streams > 1)}) - torch| of {name}: "
                  f"{difference:.2e}{verdict}")
        steps[f"OpenVINO {ov.__version__.split('-')[0]}, {streams} stream{'s' * (streams > 1)}, batches of {batch}"] = run
    return steps


if __name__ == "__main__":
    main()
