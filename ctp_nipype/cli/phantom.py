"""``ctp-phantom OUT_DIR``: a BIDS dataset of digital brain phantom CTP scans and their ground truth.

The command line of :func:`ctp_nipype.sims.dataset.write_phantom_dataset`; that module's docstring gives the
dataset's layout (subject ``k`` uses seed ``SEED + k - 1``; the truth under ``derivatives/phantom-truth``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..sims.dataset import TRUTH_PIPELINE, write_phantom_dataset, write_subject  # noqa: F401 - kept importable here
from ._errors import user_facing


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-phantom",
        description=(
            "Write a BIDS dataset of digital brain phantom CT perfusion scans (MNI anatomy, an ischemic "
            "core and penumbra, an artery with partial volume, a venous sinus) and its ground truth "
            "under OUT_DIR/derivatives/phantom-truth."
        ),
    )
    parser.add_argument("out_dir", type=Path, help="root of the BIDS dataset to write (created if missing)")
    parser.add_argument("--subjects", type=int, default=1, help="number of subjects (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sub-01; sub-k uses SEED + k - 1 (default %(default)s)")
    parser.add_argument(
        "--size", choices=["small", "demo"], default="demo",
        help="small: 60x60x4 voxels of 4x4x5 mm; demo: 128x128x8 of 1.875x1.875x5 mm (default %(default)s)",
    )
    parser.add_argument("--non-uniform-timing", action="store_true", help="1 s frames for 30 s, then 2 s frames")
    parser.add_argument("--motion", action="store_true", help="inject a small rigid head motion (<= 2 mm, <= 2 deg)")
    parser.add_argument("--noise-sd", type=float, default=8.0, help="Gaussian noise SD in HU (default %(default)s)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


@user_facing("ctp-phantom")
def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..io import InputError, prepare_output_dir

    if not 1 <= args.subjects <= 99:
        raise InputError(f"--subjects {args.subjects} is out of range; give 1 to 99 (two-digit labels).")
    if not 0 <= args.noise_sd < 1000:  # also refuses NaN
        raise InputError(f"--noise-sd {args.noise_sd} is out of range; give a noise SD in HU from 0 to 1000.")
    prepare_output_dir(args.out_dir, "dataset folder (OUT_DIR)")
    scans = write_phantom_dataset(
        args.out_dir,
        subjects=args.subjects,
        seed=args.seed,
        size=args.size,
        non_uniform_timing=args.non_uniform_timing,
        motion=args.motion,
        noise_sd_hu=args.noise_sd,
        log=print,
    )
    print(f"{len(scans)} phantom scan(s) written to {args.out_dir}; truth in {args.out_dir / 'derivatives' / TRUTH_PIPELINE}")
    return 0
