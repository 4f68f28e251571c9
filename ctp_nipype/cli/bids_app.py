"""``ctp-bids-app BIDS_DIR OUTPUT_DIR participant|group``: the BIDS App.

Follows the BIDS Apps specification (Gorgolewski et al. 2017): positional
``bids_dir output_dir analysis_level``, ``--participant-label``, and the
usual extras. At participant level every CTP scan of the selected
participants runs through :func:`ctp_nipype.workflows.base.init_ctp_wf`,
all in one Nipype workflow executed by Nipype's own plugins (Linear,
MultiProc or SLURM), with a work directory that makes a rerun resume from
the cache. At group level the per-scan statistics are gathered into group
tables and a group report.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..perfusion.filtering import RADIUS_MM
from ._errors import user_facing
from ._run import PLUGINS, add_method_options, check_options, method_options, parse_plugin_args
from ._run import positive_float, run_workflow, summarise_outputs

METHOD_CHOICES = ("ssvd", "csvd", "osvd", "transformer")


def available_cpus():
    """CPUs this process may run on: its affinity (what a SLURM job or ``taskset`` grants), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


#: The methods the participant level runs unless --methods is given.
PARTICIPANT_METHODS = ("osvd", "transformer")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-bids-app",
        description="CT perfusion maps (SVD family and a Transformer) for a BIDS dataset of CTP scans.",
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (never written to)")
    parser.add_argument("output_dir", type=Path, help="derivatives folder (outside the input dataset)")
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    parser.add_argument(
        "--participant-label", "--participant_label", nargs="+", metavar="LABEL",
        help="participants to process (with or without 'sub-'; default: all)",
    )
    parser.add_argument("--session-label", nargs="+", metavar="LABEL",
                        help="sessions to process (with or without 'ses-'; default: all)")
    parser.add_argument(
        "--methods", nargs="+", choices=METHOD_CHOICES, metavar="METHOD",
        help="one or more of ssvd, csvd, osvd, transformer (participant level, default: "
             f"{' '.join(PARTICIPANT_METHODS)}; group level: the methods whose lesion volumes are tabled, default: "
             "every method found)",
    )
    parser.add_argument("-w", "--work-dir", type=Path, help="Nipype work directory; a rerun with the same one resumes")
    parser.add_argument("--nprocs", type=int, default=available_cpus(),
                        help="processes for MultiProc (default: the CPUs this process may run on, %(default)s here)")
    parser.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="Nipype execution plugin")
    parser.add_argument(
        "--plugin-args", default="",
        help="plugin arguments as JSON or key=value pairs, e.g. 'sbatch_args=-p short --mem 8G,max_jobs=50'",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device of the network")
    parser.add_argument("--weights", type=Path, help="network weights (.safetensors); default the shipped ones")
    parser.add_argument("--motion-correction", action="store_true", help="rigid motion correction of every frame; frames still "
                        "displaced by more than 0.5 mm are left out of the masks and the AIF/VOF selection")
    parser.add_argument("--no-guided-filter", action="store_true", help="skip the guided filter")
    parser.add_argument(
        "--no-partial-volume-correction", action="store_true",
        help="keep the AIF as it is instead of rescaling its first-pass area to the VOF's (de la Rosa et al. 2021); "
             "for an AIF that is already corrected",
    )
    parser.add_argument(
        "--guided-filter-radius-mm", type=positive_float, default=RADIUS_MM, metavar="MM",
        help="the guided filter's in-plane radius in mm, rounded to voxels (default %(default)s: the paper's "
        "2 voxels of 0.94 mm)",
    )
    parser.add_argument("--frame-interval", type=float, help="seconds per frame when no other timing source exists")
    add_method_options(parser)
    parser.add_argument("--skip-bids-validation", action="store_true", help="skip the dataset checks")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


def validate_dataset(bids_dir):
    """The checks a CT dataset can pass (the official validator knows no CT yet)."""
    import json

    from ..bids import BIDSError

    if not Path(bids_dir).is_dir():
        raise BIDSError(f"The BIDS dataset folder {bids_dir} does not exist; point BIDS_DIR at the dataset's root.")
    description = Path(bids_dir) / "dataset_description.json"
    if not description.exists():
        raise BIDSError(f"{bids_dir} has no dataset_description.json; is it the root of a BIDS dataset?")
    try:
        payload = json.loads(description.read_text())
    except json.JSONDecodeError as err:
        raise BIDSError(f"{description} is not valid JSON ({err}).") from None
    missing = [key for key in ("Name", "BIDSVersion") if key not in payload]
    if missing:
        raise BIDSError(f"{description} lacks the required field(s) {', '.join(missing)}.")


def participant_level(args):
    from ..bids import check_output_outside_input, collect_scans, write_dataset_description
    from ..io import prepare_output_dir
    from ..workflows.base import init_ctp_wf

    if args.methods is None:
        args.methods = list(PARTICIPANT_METHODS)
    check_options(args)
    if not args.skip_bids_validation:
        validate_dataset(args.bids_dir)
    check_output_outside_input(args.output_dir, [args.bids_dir])
    work_dir = args.work_dir or Path(tempfile.gettempdir()) / "ctp_nipype_work"
    check_output_outside_input(work_dir, [args.bids_dir], "work folder (-w)")
    scans = collect_scans(args.bids_dir, args.participant_label, args.session_label)
    if "transformer" in args.methods:
        check_weights(args.weights)
    prepare_output_dir(args.output_dir)
    write_dataset_description(args.output_dir, [args.bids_dir])

    from nipype.pipeline import engine as pe

    workflow = pe.Workflow(name="ctp_nipype_wf", base_dir=str(work_dir))
    workflow.config["execution"] = {"remove_unnecessary_outputs": False}
    for scan in scans:
        single = init_ctp_wf(
            str(args.output_dir.resolve()),
            subdir=str(scan.derivatives_subdir),
            methods=args.methods,
            motion_correction=args.motion_correction,
            guided_filter=not args.no_guided_filter,
            partial_volume_correction=not args.no_partial_volume_correction,
            guided_filter_radius_mm=args.guided_filter_radius_mm,
            device=args.device,
            weights=str(args.weights.resolve()) if args.weights else None,
            frame_interval=args.frame_interval,
            method_options=method_options(args),
            n_slabs=args.slabs,
            n_procs=args.nprocs,
            working_voxel_mm=args.working_voxel_mm,
            name=f"scan_{scan.prefix.replace('-', '_')}",
        )
        single.inputs.inputnode.in_file = str(scan.path)
        single.inputs.inputnode.prefix = scan.prefix
        workflow.add_nodes([single])
    print(
        f"ctp-bids-app {__version__}: {len(scans)} scan(s) of {len({s.subject for s in scans})} participant(s), "
        f"methods {', '.join(args.methods)}, plugin {args.plugin}, work dir {work_dir}",
        flush=True,
    )
    start = time.time()
    progress = run_workflow(
        workflow, args.plugin, args.nprocs, parse_plugin_args(args.plugin_args), crashdump_dir=work_dir / "crashes",
        debug=args.debug,
    )
    print(f"\nFinished in {time.time() - start:.0f} s ({progress.finished} steps run).")
    for line in summarise_outputs(args.output_dir, start):
        print(line)
    return 0


def group_level(args):
    from ..bids import check_output_outside_input

    check_output_outside_input(args.output_dir, [args.bids_dir])
    from ..workflows.group import run_group_level

    written = run_group_level(args.output_dir, args.participant_label, args.methods)
    for path in written:
        print(f"written: {path}")
    return 0


def check_weights(weights):
    """Fail early when the network is asked for but its weights are missing, corrupt or of another network."""
    from ..nn.weights import load_model, shipped_weights_available

    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"The weights file {weights} does not exist.")
    if weights is None and not shipped_weights_available():
        raise FileNotFoundError(
            "This installation ships no Transformer weights; pass --weights FILE.safetensors "
            "or choose SVD methods only (--methods ssvd csvd osvd)."
        )
    load_model(weights, "cpu")  # reads and checks the file: a bad one fails here, before any step runs


@user_facing("ctp-bids-app")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.analysis_level == "participant":
        return participant_level(args)
    return group_level(args)


if __name__ == "__main__":
    sys.exit(main())
