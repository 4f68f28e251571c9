"""``ctp-convert isles2018|isles2024 SRC BIDS_DIR``: a public stroke dataset to BIDS.

Writes the CTP scans with their frame timing as ``sub-*_ctp.nii.gz`` and the
dataset's reference perfusion maps and lesion masks as the derivative dataset
``BIDS_DIR/derivatives/reference`` (layouts, sources and timing:
:mod:`ctp_nipype.datasets.isles`). ``ctp-convert`` routes here when its first
argument is one of :data:`ctp_nipype.datasets.isles.LAYOUTS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..datasets.isles import LAYOUTS, REFERENCE_PIPELINE, convert_dataset
from ._errors import user_facing


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ctp-convert",
        description=(
            "Convert a downloaded public stroke dataset to BIDS: the CTP scans with their frame timing, and the "
            f"dataset's reference maps (CBF, CBV, MTT, Tmax) and lesion masks under BIDS_DIR/derivatives/"
            f"{REFERENCE_PIPELINE}. Then run ctp-bids-app on BIDS_DIR and compare with ctp-compare."
        ),
    )
    parser.add_argument("layout", choices=LAYOUTS, help="the dataset's layout")
    parser.add_argument(
        "src", type=Path,
        help="ISLES 2018: the TRAINING (or TESTING) folder holding case_<N>/, or their parent; "
             "ISLES 2024: the release folder holding raw_data/ and derivatives/",
    )
    parser.add_argument("bids_dir", type=Path, help="the BIDS dataset to write (outside SRC)")
    parser.add_argument(
        "--space", choices=["native", "ncct"], default="native",
        help="ISLES 2024 only: native (default): the raw CTP and maps; ncct: the CTP and maps co-registered "
             "to the NCCT, where the follow-up lesion mask lies",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return parser


@user_facing("ctp-convert")
def main(argv=None):
    args = build_parser().parse_args(argv)
    scans = convert_dataset(args.layout, args.src, args.bids_dir, space=args.space, log=print)
    print(f"{len(scans)} scan(s) written to {args.bids_dir}; reference maps and masks in "
          f"{args.bids_dir / 'derivatives' / REFERENCE_PIPELINE}")
    return 0
