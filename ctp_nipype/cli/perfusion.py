"""``ctp-perfusion IN_FILE OUT_DIR``: perfusion maps of one CTP scan.

Runs :func:`ctp_nipype.workflows.base.init_ctp_wf` (loading, optional motion
correction, masks, automatic AIF/VOF with partial-volume correction unless
``--aif``, guided filter unless ``--no-guided-filter``, every method) and
writes ``<prefix>_desc-<method>_<map>.nii.gz`` (+ JSON sidecars) flat into
OUT_DIR, the prefix being the input's file name without ``_ctp`` and the
extension.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..perfusion.constants import DEFAULT_METHODS
from ._dicom import add_dicom_options, dicom_input, export_dicom_outputs
from ._errors import user_facing
from .parser import (
    add_execution_options,
    add_methods_option,
    add_network_options,
    add_processing_options,
    validate_options,
)


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="ctp-perfusion",
        description="Perfusion maps (CBF, CBV, MTT, Tmax/BAD) of one 4D CT perfusion scan.",
    )
    parser.add_argument("in_file", type=Path, help="4D CTP NIfTI in HU (x, y, z, t), or a folder of DICOM files")
    parser.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    inputs = parser.add_argument_group("Inputs replacing automatic steps")
    inputs.add_argument("--aif", type=Path, help="arterial curve TSV (column 'aif', HU); default: automatic")
    inputs.add_argument("--vof", type=Path, help="venous curve TSV (column 'vof', HU); default: automatic")
    inputs.add_argument("--mask", type=Path, help="brain mask replacing the automatic one")
    add_methods_option(inputs, flags=("--method", "--methods"), default=DEFAULT_METHODS)
    add_processing_options(parser)
    add_network_options(parser)
    add_execution_options(
        parser, 1,
        "Nipype work directory, trusted like code (Nipype loads its cache as pickles): it must be yours and not "
        "writable by others; a rerun with the same one resumes (default: a new private temporary folder)",
    )
    add_dicom_options(parser)
    return parser


def validate_inputs(args):
    """Read and check every input before anything is built: bad input fails here, in one line."""
    from ..bids import check_output_outside_input, find_dataset_root
    from ..io import (
        InputError,
        check_frame_count,
        check_series_values,
        load_mask,
        prepare_output_dir,
        read_curve_tsv,
        read_timing,
    )
    import nibabel as nb

    for label, path in (("input scan", args.in_file), ("AIF file", args.aif), ("VOF file", args.vof),
                        ("mask", args.mask)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"The {label} {path} does not exist.")
    validate_options(args)
    # nothing is ever written inside the dataset the scan comes from
    dataset = find_dataset_root(args.in_file)
    if dataset is not None:
        check_output_outside_input(args.out_dir, [dataset])
        if args.work_dir is not None:
            check_output_outside_input(args.work_dir, [dataset], "work folder (-w)")
    # the header and timing first (cheap), then the values in one pass, a frame at a time (bounded memory)
    timing, _ = read_timing(args.in_file, frame_interval=args.frame_interval, allow_long_frames=args.allow_long_frames)
    n_frames = timing.frame_times.size
    check_frame_count(n_frames, args.in_file)
    check_series_values(args.in_file)
    header = nb.load(str(args.in_file))
    if args.baseline_frames is not None and args.baseline_frames >= n_frames:
        raise InputError(f"--baseline-frames {args.baseline_frames} leaves no frame of the {n_frames} after it.")
    if args.aif is not None:
        read_curve_tsv(args.aif, "aif", n_frames, check_units=True, allow_long_frames=args.allow_long_frames)
    if args.vof is not None:
        read_curve_tsv(args.vof, "vof", n_frames, check_units=True, allow_long_frames=args.allow_long_frames)
    if args.mask is not None and not load_mask(args.mask, header.shape[:3], header.affine, "brain mask").any():
        raise InputError(f"The brain mask {args.mask} is empty; give a mask with the brain's voxels set to 1.")
    prepare_output_dir(args.out_dir)


@user_facing("ctp-perfusion")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..io import output_prefix
    from ._workdir import private_dir
    from .workflow import ScanJob, report, run_scans

    args.in_file, _, _keep = dicom_input(args)  # a DICOM folder becomes a NIfTI in the work folder
    validate_inputs(args)
    job = ScanJob(args.in_file, output_prefix(args.in_file),
                  inputs={"aif_file": args.aif, "vof_file": args.vof, "brain_mask": args.mask})
    with tempfile.TemporaryDirectory(prefix="ctp_perfusion_") as tmp:  # created 0700, yours
        work_dir = Path(tmp) if args.work_dir is None else private_dir(args.work_dir)
        crashdump_dir = (args.out_dir if args.work_dir is None else Path(work_dir)).resolve() / "crashes"
        failures, progress, start = run_scans("ctp-perfusion", [job], args, args.out_dir, work_dir, args.methods,
                                              crashdump_dir)
    report(failures, progress, start, args.out_dir, 1)
    export_dicom_outputs(args, args.out_dir, output_prefix(args.in_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
