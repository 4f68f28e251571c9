"""Clinical-size scans through the whole single-scan command: each step's wall time and the peak memory.

Builds the digital phantom on a clinical grid (512 x 512 pixels of 0.47 x 0.47 mm, 5 mm slices, 40 frames of
1.5 s: ``make_phantom`` on a 28-slice grid, about 1.2 GB), writes it with as many slices as asked (deeper
scans repeat the 24-slice slab along z, one frame at a time, so that building a 160-slice scan never holds
it), runs ``ctp-perfusion`` on it as a user would, and prints one markdown row per run: wall time, the
process tree's peak memory (sampled every 0.2 s from /proc: anonymous, what the run needs, and resident,
which also counts the touched pages of memory-mapped files that the kernel can drop), the machine's load average, and the
wall time of each step (a step run as several slab jobs is summed over them, and their count is shown).

Targets (issue 31, 2 cores): SVD family at 512 x 512 x 24 x 40 <= 60 s; with the network <= 5 min; motion
correction <= 60 s for 40 frames; peak memory <= 6 GB at 512 x 512 x 160 x 40 with every method.

    python benchmarks/bench_clinical.py --slices 24 --methods ssvd csvd osvd
    python benchmarks/bench_clinical.py --slices 24 --methods ssvd csvd osvd transformer --working-voxel-mm 0.94
    python benchmarks/bench_clinical.py --slices 24 --methods ssvd --motion-correction
    python benchmarks/bench_clinical.py --slices 160 --methods ssvd csvd osvd transformer --working-voxel-mm 1.88
    python benchmarks/bench_clinical.py --slices 24 --methods transformer --device cuda   # on a GPU machine

The phantom files are kept under ``--cache`` (default /tmp/ctp_clinical_phantoms) and reused.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

GRID_MM = (0.47, 0.47, 5.0)
BLOCK_SLICES = 24
FRAME_INTERVAL_S = 1.5


def clinical_grid(n_slices):
    """Register a 512 x 512 x ``n_slices`` grid of 0.47 x 0.47 x 5 mm with the phantom; returns its name."""
    from ctp_nipype.sims import phantom

    name = f"clinical{n_slices}"
    phantom.GRIDS[name] = phantom.PhantomGrid(shape=(512, 512, n_slices), voxel_mm=GRID_MM,
                                              center_mm=(0.0, -18.0, 10.0), template_step_mm=1.0)
    return name


def phantom_file(n_slices, n_frames, cache, motion=False, seed=0):
    """The phantom scan of ``n_slices`` (built once, then reused) and its number of brain voxels."""
    import nibabel as nb

    from ctp_nipype.sims import phantom
    from ctp_nipype.slabs import FrameWriter

    name = f"clinical_{n_slices}x{n_frames}{'_motion' if motion else ''}_seed{seed}"
    path = Path(cache) / f"sub-{name.replace('_', '')}_ctp.nii.gz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    block = min(n_slices, BLOCK_SLICES)
    grid = clinical_grid(block)
    start = time.time()
    ph = phantom.make_phantom(grid, seed=seed, motion=motion, frame_times=np.arange(n_frames) * FRAME_INTERVAL_S)
    affine = ph.affine.copy()
    affine[2, 3] -= (n_slices - block) / 2 * GRID_MM[2]  # the slab repeated, centred where it was
    header = nb.Nifti1Header()
    header.set_data_shape((512, 512, n_slices, n_frames))
    header.set_zooms(GRID_MM + (FRAME_INTERVAL_S,))
    header.set_xyzt_units("mm", "sec")
    repeats = -(-n_slices // block)
    with FrameWriter(path, (512, 512, n_slices, n_frames), affine, header,
                     {"FrameTimesStart": ph.frame_times.tolist(), "Note": f"make_phantom on a {block}-slice grid, "
                      f"repeated along z to {n_slices} slices"}) as out:
        for t in range(n_frames):
            out.write(np.tile(ph.hu[..., t], (1, 1, repeats))[:, :, :n_slices])
    print(f"# built {path.name} in {time.time() - start:.0f} s ({int(ph.brain_mask.sum()) * repeats:,} brain "
          f"voxels at most)", flush=True)
    return path


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _tree_rss_bytes(root):
    """``(resident, anonymous)`` bytes of a process tree: all resident pages, and those not backed by a file.

    Resident memory counts the pages of memory-mapped files a process has touched (a NIfTI read through a
    memory map); the kernel can drop those at any time, so the anonymous part is what the run needs.
    """
    total, anonymous, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            total += int(fields["VmRSS"].split()[0]) * 1024
            anonymous += int(fields["RssAnon"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            continue
        stack.extend(_children(pid))
    return total, anonymous


def _tree_pids(root):
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(_children(pid))
    return found


def run_command(argv, max_bytes=None):
    """Run a command; returns (wall s, (peak process-tree RSS, peak anonymous RSS) bytes, stdout text, whether
    it was stopped).

    With ``max_bytes`` the command's process tree is stopped (SIGKILL, process by process) as soon as
    its anonymous resident memory passes that many bytes: a shared machine must not run out of memory.
    """
    import signal

    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]
    stopped = [False]
    lines = []

    def sample():
        while proc.poll() is None:
            resident, anonymous = _tree_rss_bytes(proc.pid)
            peak[0], peak[1] = max(peak[0], resident), max(peak[1], anonymous)
            if max_bytes and peak[1] > max_bytes and not stopped[0]:
                stopped[0] = True
                for pid in reversed(_tree_pids(proc.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(("[done", "[FAILED", "Finished")):
            print("#   " + line.rstrip(), flush=True)
    proc.wait()
    sampler.join()
    if proc.returncode and not stopped[0]:
        sys.stdout.write("".join(lines[-30:]))
        raise SystemExit(f"{argv[0]} failed with status {proc.returncode}")
    if stopped[0]:
        print(f"# stopped: the process tree passed {max_bytes / 1e9:.1f} GB", flush=True)
    return time.time() - start, tuple(peak), "".join(lines), stopped[0]


STEP_LINE = re.compile(r"^\[done\s+([\d.]+) s\] (\S+)")


def step_times(text):
    """``{step: (summed seconds, jobs)}`` from the command's ``[done ...]`` lines (slab jobs summed)."""
    steps = defaultdict(lambda: [0.0, 0])
    mapnodes = set()
    for line in text.splitlines():
        found = STEP_LINE.match(line)
        if found:
            name = found.group(2).split(".")[-1]
            job = re.match(r"^_(.+?)\d+$", name)  # a MapNode's job _ssvd3 counts for ssvd
            if job:
                name = job.group(1)
                mapnodes.add(name)
            elif name in mapnodes or name in ("sources",):
                continue  # the MapNode's own line once its jobs are done; bookkeeping nodes
            steps[name][0] += float(found.group(1))
            steps[name][1] += 1
    return {k: tuple(v) for k, v in steps.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[24])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--methods", nargs="+", default=["ssvd", "csvd", "osvd"])
    parser.add_argument("--motion-correction", action="store_true", help="a moving phantom, corrected")
    parser.add_argument("--working-voxel-mm", type=float)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--slabs", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="the network's device (cpu or cuda)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ctp_clinical_phantoms"))
    parser.add_argument("--work", help="work/output folder (default: a temporary one, deleted)")
    parser.add_argument("--max-gb", type=float, default=10.0,
                        help="stop the run when its process tree passes this anonymous memory (GB) (default %(default)s)")
    args = parser.parse_args(argv)

    rows = []
    for n_slices in args.slices:
        scan = phantom_file(n_slices, args.frames, args.cache, motion=args.motion_correction)
        with tempfile.TemporaryDirectory(prefix="bench_clinical_", dir=args.work) as tmp:
            # ctp-perfusion's module, not its console script: a GPU machine runs the checkout without installing it
            command = [sys.executable, "-m", "ctp_nipype.cli.perfusion", str(scan), f"{tmp}/out", "-w",
                       f"{tmp}/work", "--method", *args.methods, "--nprocs", str(args.nprocs), "--device",
                       args.device, "--slabs", str(args.slabs)]
            if args.motion_correction:
                command.append("--motion-correction")
            if args.working_voxel_mm:
                command += ["--working-voxel-mm", str(args.working_voxel_mm)]
            load_before = os.getloadavg()[0]
            print("# " + " ".join(command[1:]), flush=True)
            wall, peak, text, stopped = run_command(command, args.max_gb * 1e9)
            load_after = os.getloadavg()[0]
        steps = step_times(text)
        rows.append((n_slices, wall, peak, load_before, load_after, steps, stopped))

    print(f"\n| scan | methods | procs | working grid | wall s | peak GB (anonymous / resident) | load avg (start/end) "
          f"| steps (s; jobs) |")
    print("|---|---|---:|---|---:|---:|---|---|")
    for n_slices, wall, peak, before, after, steps, stopped in rows:
        detail = ", ".join(f"{k} {v[0]:.1f}" + (f" ({v[1]})" if v[1] > 1 else "")
                           for k, v in sorted(steps.items(), key=lambda kv: -kv[1][0]))
        grid = f"{args.working_voxel_mm} mm" if args.working_voxel_mm else "scan (0.47 mm)"
        methods = " ".join(args.methods) + (" + motion" if args.motion_correction else "")
        wall_text = f"stopped at {wall:.0f}" if stopped else f"{wall:.0f}"
        peak_text = f"> {args.max_gb:g} (stopped)" if stopped else f"{peak[1] / 1e9:.2f} / {peak[0] / 1e9:.2f}"
        print(f"| 512x512x{n_slices}x{args.frames} | {methods} | {args.nprocs} | {grid} | {wall_text} | "
              f"{peak_text} | {before:.1f} / {after:.1f} | {detail} |", flush=True)


if __name__ == "__main__":
    main()
