"""``ctp-perfusion IN_FILE OUT_DIR``: perfusion maps of one CTP scan.

Writes ``<prefix>_desc-<method>_<map>.nii.gz`` (+ JSON sidecars) flat into
OUT_DIR, the prefix being the input's file name without ``_ctp`` and the
extension.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__
from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.svd import DEFAULT_OI_THRESHOLD, METHODS
from ._errors import user_facing


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-perfusion",
        description="Perfusion maps (CBF, CBV, MTT, Tmax) of one 4D CT perfusion scan.",
    )
    parser.add_argument("in_file", type=Path, help="4D CTP NIfTI in HU (x, y, z, t)")
    parser.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    parser.add_argument("--aif", type=Path, required=True, help="arterial curve TSV (column 'aif', HU)")
    parser.add_argument("--mask", type=Path, help="3D mask of the voxels to fit")
    parser.add_argument(
        "--method", nargs="+", choices=METHODS, default=["osvd"], metavar="METHOD",
        help=f"one or more of {', '.join(METHODS)} (default: osvd)",
    )
    parser.add_argument("--threshold", type=float, help="relative SVD threshold (default per method)")
    parser.add_argument("--oi-threshold", type=float, default=DEFAULT_OI_THRESHOLD, help="oSVD oscillation index")
    parser.add_argument("--kappa-h", type=float, default=KAPPA_H, help="hematocrit factor (default %(default)s)")
    parser.add_argument("--rho", type=float, default=RHO, help="tissue density in g/ml (default %(default)s)")
    parser.add_argument("--frame-interval", type=float, help="seconds per frame when no other timing source exists")
    parser.add_argument("--baseline-frames", type=int, help="pre-bolus frames (default: detected from the AIF)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


@user_facing("ctp-perfusion")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..interfaces import SVDDeconvolution  # nipype import kept out of --help

    if not args.in_file.exists():
        raise FileNotFoundError(f"The input scan {args.in_file} does not exist.")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for method in args.method:
        start = time.monotonic()
        interface = SVDDeconvolution(
            in_file=str(args.in_file.resolve()),
            aif_file=str(args.aif.resolve()),
            method=method,
            oi_threshold=args.oi_threshold,
            kappa_h=args.kappa_h,
            rho=args.rho,
        )
        if args.mask:
            interface.inputs.mask_file = str(args.mask.resolve())
        if args.threshold is not None:
            interface.inputs.threshold = args.threshold
        if args.frame_interval is not None:
            interface.inputs.frame_interval = args.frame_interval
        if args.baseline_frames is not None:
            interface.inputs.n_baseline_frames = args.baseline_frames
        result = interface.run(cwd=str(args.out_dir.resolve()))
        outputs = result.outputs
        print(
            f"[{method}] done in {time.monotonic() - start:.1f} s: "
            f"{Path(outputs.cbf).name} ... ({outputs.flagged_voxels} flagged voxels)"
        )
    print(f"Maps written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
