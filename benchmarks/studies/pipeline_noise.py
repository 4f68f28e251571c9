"""Grey-matter CBF through the whole BIDS App on the digital phantom, against its noise (docs/validation.md).

Issue 7 asks for grey-matter CBF within 25% of the truth for oSVD and the network, end to end. This script
writes the phantom (``--size``; one subject per seed of ``--seeds``) at each noise level, runs ``ctp-bids-app ... participant``
on it with every method (automatic AIF and VOF, partial-volume correction, guided filter at its default
radius: everything a user's run does) and prints, per method, the median CBF in the phantom's grey-matter
label over the median of the true CBF there. Unlike ``phantom_steps.py`` (true AIF, one step at a time),
every step of the pipeline counts here.

    python benchmarks/studies/pipeline_noise.py [--noise-hu 0 1 2 4 8] [--seeds 4] [--size small] [--work DIR]
        [--methods ssvd csvd osvd transformer] [--weights FILE.safetensors]

About 10 s per seed and noise level on 2 cores with the network (small phantom), 80 s on the demo one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ctp_nipype.nn.weights import shipped_weights_available
from ctp_nipype.validation import pipeline_grey_matter_ratios as grey_matter_ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise-hu", nargs="+", type=float, default=[0.0, 1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4])
    parser.add_argument("--size", default="small", choices=("small", "demo"))
    parser.add_argument("--work", type=Path, help="where the phantoms and runs go (default a temporary folder)")
    parser.add_argument("--methods", nargs="+", help="default: every method (the network when weights exist)")
    parser.add_argument("--weights", type=Path, help="network weights instead of the shipped ones")
    args = parser.parse_args(argv)
    methods = args.methods or (["ssvd", "csvd", "osvd"]
                               + (["transformer"] if shipped_weights_available() or args.weights else []))
    print(f"{args.size} phantom, BIDS App with default settings{'' if args.weights is None else f', weights {args.weights}'};"
          " grey-matter CBF / truth (median)\n")
    print("| seed | noise (HU) | " + " | ".join(methods) + " | run (s) |")
    print("|---:|---:|" + "---:|" * (len(methods) + 1))
    with tempfile.TemporaryDirectory() as scratch:
        base = args.work or Path(scratch)
        for seed in args.seeds:
            for noise in args.noise_hu:
                start = time.perf_counter()
                ratios = grey_matter_ratios(base / f"seed-{seed}-noise-{noise:g}", noise, seed, methods, args.size,
                                            args.weights)
                print(f"| {seed} | {noise:g} | " + " | ".join(f"{ratios[m]:.2f}" for m in methods)
                      + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
