"""Speed and memory of reading a CT perfusion series from DICOM (``ctp_nipype.dicom.read_dicom_ctp``).

A synthetic series (random HU, one file per slice per time point, 1.5 s frames) is written with
``ctp_nipype.sims.dicom_phantom.write_dicom_series`` into a temporary folder, then read twice, each read in a
fresh process so that its peak memory (ru_maxrss) is the reader's own. Prints the files, the seconds of each
read and the peak memory against the size of the float32 array read.

Usage: python benchmarks/bench_dicom.py [--matrix 512] [--slices 8] [--frames 40] [--layout single|enhanced]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

WRITE = """
import sys, time
import numpy as np
from ctp_nipype.sims.dicom_phantom import write_dicom_series
folder, matrix, slices, frames, layout = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
shape = (matrix, matrix, slices, frames)
start = time.perf_counter()
files = write_dicom_series(np.random.default_rng(0).integers(-1000, 100, size=shape).astype(np.float32),
                           np.diag([0.47, 0.47, 5.0, 1.0]), folder, frame_times=np.arange(frames) * 1.5, layout=layout)
print(f"wrote {len(files)} file(s), {layout} layout, {shape}: {time.perf_counter() - start:.1f} s")
"""
READ = """
import json, resource, sys, time
from ctp_nipype.dicom import read_dicom_ctp
start = time.perf_counter()
ctp = read_dicom_ctp(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "shape": list(ctp.data.shape),
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--layout", choices=["single", "enhanced"], default="single")
    args = parser.parse_args(argv)
    shape = (args.matrix, args.matrix, args.slices, args.frames)
    # writing and reading each in its own process, from this lean one: Linux keeps a process's peak memory
    # across exec, so a reader started from the writer would report the writer's peak
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as folder:
        out = subprocess.run([sys.executable, "-c", WRITE, folder, str(args.matrix), str(args.slices),
                              str(args.frames), args.layout], capture_output=True, text=True, check=True)
        print(out.stdout.strip())
        array_gb = np.prod(shape) * 4 / 1e9
        for attempt in (1, 2):
            out = subprocess.run([sys.executable, "-c", READ, folder], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"read {attempt}: {result['seconds']:.1f} s, peak memory {result['peak_gb']:.2f} GB "
                  f"(the float32 array: {array_gb:.2f} GB)")


if __name__ == "__main__":
    main()
