"""``ctp-perfusion IN_FILE OUT_DIR``: perfusion maps of one CTP scan.

Runs :func:`ctp_nipype.workflows.base.init_ctp_wf` (loading, optional motion
correction, masks, automatic AIF/VOF with partial-volume correction unless
``--aif``, guided filter unless ``--no-guided-filter``, every method) and
writes ``<prefix>_desc-<method>_<map>.nii.gz`` (+ JSON sidecars) flat into
OUT_DIR, the prefix being the input's file name without ``_ctp`` and the
extension.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..perfusion.filtering import RADIUS_MM
from ._errors import user_facing
from ._run import (
    PLUGINS,
    add_method_options,
    check_options,
    method_options,
    parse_plugin_args,
    positive_float,
    run_workflow,
    summarise_outputs,
)

METHOD_CHOICES = ("ssvd", "csvd", "osvd", "transformer")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-perfusion",
        description="Perfusion maps (CBF, CBV, MTT, Tmax/BAD) of one 4D CT perfusion scan.",
    )
    parser.add_argument("in_file", type=Path, help="4D CTP NIfTI in HU (x, y, z, t)")
    parser.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    parser.add_argument("--aif", type=Path, help="arterial curve TSV (column 'aif', HU); default: automatic")
    parser.add_argument("--vof", type=Path, help="venous curve TSV (column 'vof', HU); default: automatic")
    parser.add_argument("--mask", type=Path, help="brain mask replacing the automatic one")
    parser.add_argument(
        "--method", "--methods", nargs="+", choices=METHOD_CHOICES, default=["osvd", "transformer"],
        metavar="METHOD", help="one or more of ssvd, csvd, osvd, transformer (default: osvd transformer)",
    )
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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device of the network")
    parser.add_argument("--weights", type=Path, help="network weights (.safetensors); default the shipped ones")
    add_method_options(parser)
    parser.add_argument("--frame-interval", type=float, help="seconds per frame when no other timing source exists")
    parser.add_argument("--nprocs", type=int, default=1, help="processes (MultiProc when > 1)")
    parser.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="Nipype execution plugin")
    parser.add_argument("--plugin-args", default="", help="plugin arguments (JSON or key=value pairs)")
    parser.add_argument("-w", "--work-dir", type=Path, help="Nipype work directory (default: a temporary folder)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


def validate_inputs(args):
    """Read and check every input before anything is built: bad input fails here, in one line."""
    from ..bids import check_output_outside_input, find_dataset_root
    from ..io import (
        InputError,
        check_enhancement,
        check_plausible_hu,
        load_ctp,
        load_mask,
        prepare_output_dir,
        read_curve_tsv,
    )
    from .bids_app import check_weights

    for label, path in (("input scan", args.in_file), ("AIF file", args.aif), ("VOF file", args.vof),
                        ("mask", args.mask)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"The {label} {path} does not exist.")
    check_options(args)
    # nothing is ever written inside the dataset the scan comes from
    dataset = find_dataset_root(args.in_file)
    if dataset is not None:
        check_output_outside_input(args.out_dir, [dataset])
        if args.work_dir is not None:
            check_output_outside_input(args.work_dir, [dataset], "work folder (-w)")
    scan = load_ctp(args.in_file, frame_interval=args.frame_interval)
    check_plausible_hu(scan.data, args.in_file)
    check_enhancement(scan.data, args.in_file)
    n_frames = scan.data.shape[3]
    if args.baseline_frames is not None and args.baseline_frames >= n_frames:
        raise InputError(f"--baseline-frames {args.baseline_frames} leaves no frame of the {n_frames} after it.")
    if args.aif is not None:
        read_curve_tsv(args.aif, "aif", n_frames)
    if args.vof is not None:
        read_curve_tsv(args.vof, "vof", n_frames)
    if args.mask is not None and not load_mask(args.mask, scan.spatial_shape, scan.affine, "brain mask").any():
        raise InputError(f"The brain mask {args.mask} is empty; give a mask with the brain's voxels set to 1.")
    del scan
    if "transformer" in args.method:
        check_weights(args.weights)
    prepare_output_dir(args.out_dir)


@user_facing("ctp-perfusion")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..io import output_prefix
    from ..workflows.base import init_ctp_wf

    validate_inputs(args)

    prefix = output_prefix(args.in_file)
    options = method_options(args)
    workflow = init_ctp_wf(
        str(args.out_dir.resolve()),
        subdir="",
        methods=args.method,
        motion_correction=args.motion_correction,
        guided_filter=not args.no_guided_filter,
        partial_volume_correction=not args.no_partial_volume_correction,
        guided_filter_radius_mm=args.guided_filter_radius_mm,
        device=args.device,
        weights=str(args.weights.resolve()) if args.weights else None,
        frame_interval=args.frame_interval,
        method_options=options,
        n_slabs=args.slabs,
        n_procs=args.nprocs,
        working_voxel_mm=args.working_voxel_mm,
        name=f"ctp_{prefix.replace('-', '_')}",
    )
    workflow.inputs.inputnode.in_file = str(args.in_file.resolve())
    workflow.inputs.inputnode.prefix = prefix
    for field, path in (("aif_file", args.aif), ("vof_file", args.vof), ("brain_mask", args.mask)):
        if path is not None:
            setattr(workflow.inputs.inputnode, field, str(path.resolve()))
    with tempfile.TemporaryDirectory(prefix="ctp_perfusion_") as tmp:
        work_dir = args.work_dir or Path(tmp)
        workflow.base_dir = str(Path(work_dir).resolve())
        start = time.time()
        crashdump_dir = (args.out_dir if args.work_dir is None else Path(work_dir)).resolve() / "crashes"
        run_workflow(workflow, args.plugin, args.nprocs, parse_plugin_args(args.plugin_args),
                     crashdump_dir=crashdump_dir, debug=args.debug)
    print(f"\nFinished in {time.time() - start:.0f} s.")
    for line in summarise_outputs(args.out_dir, start):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
