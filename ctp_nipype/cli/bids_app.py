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

import sys
from pathlib import Path

from .. import __version__
from ..perfusion.constants import DEFAULT_METHODS
from ._errors import user_facing
from .parser import (
    add_execution_options,
    add_methods_option,
    add_network_options,
    add_processing_options,
    available_cpus,
    validate_options,
)

#: The methods the participant level runs unless --methods is given.
PARTICIPANT_METHODS = DEFAULT_METHODS


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="ctp-bids-app",
        description="CT perfusion maps (SVD family and a Transformer) for a BIDS dataset of CTP scans.",
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (never written to)")
    parser.add_argument("output_dir", type=Path, help="derivatives folder (outside the input dataset)")
    parser.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    bids = parser.add_argument_group("BIDS selection")
    bids.add_argument(
        "--participant-label", "--participant_label", nargs="+", metavar="LABEL",
        help="participants to process (with or without 'sub-'; default: all)",
    )
    bids.add_argument("--session-label", nargs="+", metavar="LABEL",
                      help="sessions to process (with or without 'ses-'; default: all)")
    add_methods_option(
        bids, default=None,
        extra_help=f" at participant level ({' '.join(PARTICIPANT_METHODS)} by default); at group level the methods "
                   "whose lesion volumes are tabled (default: every method found)",
    )
    bids.add_argument("--skip-bids-validation", action="store_true", help="skip the dataset checks")
    bids.add_argument("--dicom-out", type=Path, metavar="DIR",
                      help="also write each scan's results as DICOM for PACS into DIR/<prefix>/, referencing the "
                      "source series kept under BIDS_DIR/sourcedata/ by `ctp-convert --keep-source`")
    add_processing_options(parser)
    add_network_options(parser)
    add_execution_options(
        parser, available_cpus(),
        "Nipype work directory, trusted like code (Nipype loads its cache as pickles): it must be yours and not "
        "writable by others. Default: a folder per dataset and output folder under your cache folder "
        "(~/.cache/ctp_nipype/work/...), so that a rerun resumes",
    )
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
    from ._workdir import default_work_dir, private_dir
    from .workflow import ScanJob, precheck_scans, report, run_scans

    if args.methods is None:
        args.methods = list(PARTICIPANT_METHODS)
    validate_options(args)
    if not args.skip_bids_validation:
        validate_dataset(args.bids_dir)
    check_output_outside_input(args.output_dir, [args.bids_dir])
    if args.work_dir is not None:
        check_output_outside_input(args.work_dir, [args.bids_dir], "work folder (-w)")
    scans = collect_scans(args.bids_dir, args.participant_label, args.session_label)
    if args.dicom_out is not None:
        from ..dicom.convert import source_for_scan

        check_output_outside_input(args.dicom_out, [args.bids_dir], "DICOM output folder (--dicom-out)")
        sources = {scan.prefix: source_for_scan(args.bids_dir, scan.path) for scan in scans}
    prepare_output_dir(args.output_dir)
    if args.work_dir is None:
        work_dir, kept = default_work_dir(args.bids_dir, args.output_dir)
    else:
        work_dir, kept = private_dir(args.work_dir), True
    check_output_outside_input(work_dir, [args.bids_dir], "work folder (-w)")
    jobs = [ScanJob(scan.path, scan.prefix, str(scan.derivatives_subdir)) for scan in scans]
    good, refused = precheck_scans(jobs, args)
    write_dataset_description(args.output_dir, [args.bids_dir])
    print(
        f"ctp-bids-app {__version__}: {len(scans)} scan(s) of {len({s.subject for s in scans})} participant(s), "
        f"methods {', '.join(args.methods)}, plugin {args.plugin}, work dir {work_dir}"
        + ("" if kept else " (temporary: your cache folder is not usable, so a rerun starts afresh)"),
        flush=True,
    )
    failures, progress, start = run_scans("ctp-bids-app", good, args, args.output_dir, work_dir, args.methods,
                                          Path(work_dir) / "crashes", refused)
    if args.dicom_out is not None:
        from ..dicom.write import export_dicom

        for scan in scans:
            if scan.prefix not in failures:
                written = export_dicom(args.output_dir / scan.derivatives_subdir, scan.prefix, sources[scan.prefix],
                                       args.dicom_out / scan.prefix, methods=args.methods)
                print(f"DICOM for PACS: {len(written)} objects in {args.dicom_out / scan.prefix}")
    report(failures, progress, start, args.output_dir, len(jobs))
    return 0


def group_level(args):
    from ..bids import check_output_outside_input
    from ..workflows.group import run_group_level
    from ._workdir import locked_folders

    check_output_outside_input(args.output_dir, [args.bids_dir])
    output_dir = args.output_dir.resolve()  # a relative path means the same folder wherever Nipype changes to
    for note in sorted([*output_dir.glob("sub-*/**/*_FAILED.txt"), *output_dir.glob("sub-*/**/*_UNFINISHED.txt")]):
        state = "failed" if note.name.endswith("_FAILED.txt") else "did not finish"
        print(f"warning: {note.name.rsplit('_', 1)[0]}: its participant-level run {state} ({note}); "
              "its files are not complete and may be left out of or wrong in the group tables", flush=True)
    with locked_folders("ctp-bids-app", [(output_dir, "output folder")]):
        written = run_group_level(output_dir, args.participant_label, args.methods)
    for path in written:
        print(f"written: {path}")
    return 0


@user_facing("ctp-bids-app")
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.analysis_level == "participant":
        return participant_level(args)
    return group_level(args)


if __name__ == "__main__":
    sys.exit(main())
