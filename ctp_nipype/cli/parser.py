"""The options of the command lines, in one place (fMRIPrep's ``cli/parser.py`` style).

``ctp-perfusion`` (one scan) and ``ctp-bids-app`` (a BIDS dataset) share every
processing, network and execution option; each adds its own positional
arguments and input options. The checks that every option must pass before
any work starts live here too (:func:`validate_options`, :func:`check_weights`,
:func:`check_device`), so that both commands refuse bad options alike.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .. import __version__
from ..perfusion.constants import DEFAULT_METHODS, KAPPA_H, METHODS, NETWORK_METHOD, RHO, SVD_METHODS
from ..perfusion.timing import MAX_DURATION_S, MAX_FRAME_INTERVAL_S

#: Nipype execution plugins the commands offer
PLUGINS = ("Linear", "MultiProc", "SLURM")


def available_cpus():
    """CPUs this process may run on: its affinity (what a SLURM job or ``taskset`` grants), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def positive_float(text):
    """argparse type: a number above 0 (``--guided-filter-radius-mm 2.5``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_methods_option(parser, flags=("--methods",), default=DEFAULT_METHODS, extra_help=""):
    parser.add_argument(
        *flags, dest="methods", nargs="+", choices=METHODS, default=None if default is None else list(default),
        metavar="METHOD",
        help=f"one or more of {', '.join(METHODS)} (default: {' '.join(default or DEFAULT_METHODS)}){extra_help}",
    )


def add_processing_options(parser):
    """Preprocessing, timing, the SVD thresholds and the constants: identical in both commands."""
    from ..perfusion.filtering import RADIUS_MM
    from ..perfusion.svd import DEFAULT_OI_THRESHOLD
    from ..perfusion.triage import DEFAULT_PEAK_INTERPOLATION, PEAK_INTERPOLATIONS

    group = parser.add_argument_group("Processing")
    group.add_argument("--motion-correction", action="store_true", help="rigid motion correction of every frame; "
                       "frames still displaced by more than 0.5 mm are left out of the masks and the AIF/VOF selection")
    group.add_argument("--no-guided-filter", action="store_true", help="skip the guided filter")
    group.add_argument(
        "--no-partial-volume-correction", action="store_true",
        help="keep the AIF as it is instead of rescaling its first-pass area to the VOF's (de la Rosa et al. 2021); "
             "for an AIF that is already corrected",
    )
    group.add_argument(
        "--guided-filter-radius-mm", type=positive_float, default=RADIUS_MM, metavar="MM",
        help="the guided filter's in-plane radius in mm, rounded to voxels (default %(default)s: the paper's "
        "2 voxels of 0.94 mm)",
    )
    timing = parser.add_argument_group("Timing (seconds; see the README's troubleshooting section)")
    timing.add_argument("--frame-interval", type=float, metavar="SECONDS",
                        help="seconds per frame for a scan with no timing of its own (sidecar FrameTimesStart or "
                             "RepetitionTime, NIfTI pixdim[4]); a value that contradicts the scan's own timing is "
                             "an error")
    timing.add_argument("--allow-long-frames", action="store_true",
                        help=f"accept frame intervals above {MAX_FRAME_INTERVAL_S:g} s and series longer than "
                             f"{MAX_DURATION_S / 60:g} minutes (refused otherwise, as a likely unit mix-up)")
    svd = parser.add_argument_group("SVD methods and constants")
    svd.add_argument("--threshold", type=float, help="relative SVD threshold (default per method: sSVD 0.2, "
                     "cSVD 0.1; for oSVD the largest rung of its ladder)")
    svd.add_argument("--oi-threshold", type=float, default=DEFAULT_OI_THRESHOLD,
                     help="oSVD's oscillation index target (default %(default)s)")
    svd.add_argument("--kappa-h", type=float, default=KAPPA_H, help="hematocrit factor (default %(default)s)")
    svd.add_argument("--rho", type=float, default=RHO, help="tissue density in g/ml (default %(default)s)")
    svd.add_argument("--baseline-frames", type=int, help="pre-bolus frames (default: detected from the AIF)")
    svd.add_argument("--peak-interpolation", choices=PEAK_INTERPOLATIONS, default=DEFAULT_PEAK_INTERPOLATION,
                     help="how Tmax (SVD) and TTP read a curve's peak: the sampled maximum, or a parabola through it "
                          "and its two neighbours for sub-frame times (default %(default)s; docs/validation.md)")
    grid = parser.add_argument_group("Clinical-size scans: working grid and slabs")
    grid.add_argument("--working-voxel-mm", type=positive_float, metavar="MM",
                      help="bin the scan in-plane to about this voxel size before deconvolution (e.g. 0.94 on a "
                      "0.47 mm scan: 4 times fewer curves, each less noisy); the maps stay on the scan's grid, each "
                      "brain voxel holding its block's value (sidecar WorkingGrid). Default: the scan's grid")
    grid.add_argument("--slabs", type=int, default=0, metavar="N",
                      help="deconvolve in N slabs of slices, run as parallel jobs (default 0: as many as the memory "
                      "available asks, at least one per process)")
    return parser


def add_network_options(parser):
    group = parser.add_argument_group("Network (method transformer)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="device of the network (auto: a CUDA GPU when torch sees one)")
    group.add_argument("--weights", type=Path, help="network weights (.safetensors); default the shipped ones")
    return parser


def add_execution_options(parser, nprocs_default, work_dir_help):
    group = parser.add_argument_group("Execution")
    group.add_argument("-w", "--work-dir", type=Path, help=work_dir_help)
    group.add_argument("--nprocs", type=int, default=nprocs_default,
                       help="processes for MultiProc (default %(default)s; 1 runs the steps one after the other)")
    group.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="Nipype execution plugin")
    group.add_argument(
        "--plugin-args", default="",
        help="plugin arguments as JSON or key=value pairs, e.g. 'sbatch_args=-p short --mem 8G,max_jobs=50'",
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks")
    group.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


def method_options(args):
    """The ``method_options`` of :func:`ctp_nipype.workflows.base.init_ctp_wf` from the options above."""
    return {
        "threshold": args.threshold,
        "oi_threshold": args.oi_threshold,
        "kappa_h": args.kappa_h,
        "rho": args.rho,
        "n_baseline_frames": args.baseline_frames,
        "peak_interpolation": args.peak_interpolation,
    }


def check_options(args):
    """Numeric options in their valid ranges (each error names the option); options a command lacks are skipped."""
    from ..io import InputError

    checks = (
        ("--threshold", "threshold", lambda v: 0 < v < 1, "a relative threshold strictly between 0 and 1"),
        ("--oi-threshold", "oi_threshold", lambda v: v > 0, "a positive oscillation index"),
        ("--kappa-h", "kappa_h", lambda v: 0 < v <= 1, "a hematocrit factor in (0, 1]"),
        ("--rho", "rho", lambda v: 0 < v < 10, "a tissue density in g/ml (about 1.04)"),
        ("--frame-interval", "frame_interval", lambda v: 0 < v < 3600, "a positive number of seconds"),
        ("--baseline-frames", "baseline_frames", lambda v: v >= 1, "at least 1"),
        ("--nprocs", "nprocs", lambda v: v >= 1, "at least 1"),
        ("--slabs", "slabs", lambda v: v >= 0, "0 (automatic) or a number of slabs"),
        ("--batch-size", "batch_size", lambda v: v >= 1, "at least 1"),
        ("--steps", "steps", lambda v: v >= 0, "0 or more"),
        ("--learning-rate", "learning_rate", lambda v: 0 < v < 1, "a positive learning rate below 1 (e.g. 1e-4)"),
        ("--max-voxels", "max_voxels", lambda v: v >= 1, "at least 1"),
        ("--threads", "threads", lambda v: v >= 1, "at least 1"),
        ("--max-steps", "max_steps", lambda v: v >= 0, "0 or more"),
        ("--time-budget-minutes", "time_budget_minutes", lambda v: v > 0, "a positive number of minutes"),
    )
    for option, name, valid, expected in checks:
        value = getattr(args, name, None)
        if value is not None and (math.isnan(value) or not valid(value)):
            raise InputError(f"{option} {value} is out of range; give {expected}.")
    if getattr(args, "frame_interval", None) is not None and not getattr(args, "allow_long_frames", False) \
            and args.frame_interval > MAX_FRAME_INTERVAL_S:
        raise InputError(
            f"--frame-interval {args.frame_interval:g} s is longer than a CT perfusion frame "
            f"({MAX_FRAME_INTERVAL_S:g} s at most); is it in milliseconds? Give seconds "
            f"(--frame-interval {args.frame_interval / 1000:g}), or add --allow-long-frames if it is right."
        )


def check_weights(weights):
    """Fail early when the network is asked for but its weights are missing, corrupt or of another network."""
    from ..nn.weights import WeightsError, load_model, shipped_weights_available

    if weights is not None:
        weights = Path(weights)
        if weights.is_dir():
            raise WeightsError(f"--weights {weights} is a folder; give the .safetensors file inside it "
                               "(e.g. best.safetensors of a ctp-train run).")
        if not weights.is_file():
            raise WeightsError(f"The weights file {weights} does not exist.")
    if weights is None and not shipped_weights_available():
        raise WeightsError(
            "This installation ships no Transformer weights; pass --weights FILE.safetensors "
            f"or choose SVD methods only (--methods {' '.join(SVD_METHODS)})."
        )
    return load_model(weights, "cpu")  # reads and checks the file: a bad one fails here, before any step runs


def check_device(device, option="--device"):
    """A CUDA device only where torch sees a GPU (refused before any work, not when the network's step runs)."""
    from ..io import InputError

    if device is None or str(device) in ("auto", "cpu"):
        return
    if not str(device).startswith("cuda"):
        raise InputError(f"{option} {device!r} is not a device; give auto, cpu or cuda.")
    import torch

    if not torch.cuda.is_available():
        raise InputError(
            f"{option} {device} asks for a CUDA GPU, but torch sees none here (torch.cuda.is_available() is False); "
            f"give {option} cpu, or {option} auto to use a GPU only when there is one."
        )


def validate_options(args):
    """Every shared option checked before any work: ranges, plugin arguments, network weights and device."""
    from ._run import check_plugin_args, parse_plugin_args

    check_options(args)
    args.plugin_args_dict = check_plugin_args(args.plugin, parse_plugin_args(args.plugin_args))
    if NETWORK_METHOD in (args.methods or ()):
        check_device(args.device)
        check_weights(args.weights)
