"""``ctp-convert isles2018|isles2024 SRC BIDS_DIR``: a public stroke dataset to BIDS.

Writes the CTP scans with their frame timing as ``sub-*_ctp.nii.gz`` and the
dataset's reference perfusion maps and lesion masks as the derivative dataset
``BIDS_DIR/derivatives/reference`` (layouts, sources and timing:
:mod:`ctp_nipype.datasets.isles`).

Each dataset is a layout object (``name``, ``summary``, ``add_arguments(parser)``,
``run(args)``), the interface of ``ctp-convert``'s layout registry
(``ctp_nipype.cli.convert.LAYOUTS``): :data:`ISLES2018_LAYOUT`,
:data:`ISLES2024_LAYOUT`. :func:`main` runs them on their own
(``main(["isles2018", SRC, BIDS_DIR])``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ._errors import user_facing


class IslesLayout:
    """One ISLES dataset as a ``ctp-convert`` layout."""

    def __init__(self, name, summary, source_help, spaces=False):
        self.name = name
        self.summary = summary
        self._source_help = source_help
        self._spaces = spaces

    def add_arguments(self, parser):
        parser.add_argument("src", type=Path, help=self._source_help)
        parser.add_argument("bids_dir", type=Path, help="the BIDS dataset to write (outside SRC)")
        if self._spaces:
            parser.add_argument(
                "--space", choices=["native", "ncct"], default="native",
                help="native (default): the raw CTP and its maps; ncct: the CTP and maps co-registered to the "
                     "NCCT by the organisers, where the follow-up lesion mask lies",
            )

    def run(self, args):
        from ..datasets.isles import REFERENCE_PIPELINE, convert_dataset

        scans = convert_dataset(self.name, args.src, args.bids_dir, space=getattr(args, "space", "native"), log=print)
        print(f"{len(scans)} scan(s) written to {args.bids_dir}; reference maps and masks in "
              f"{args.bids_dir / 'derivatives' / REFERENCE_PIPELINE}")
        return 0


ISLES2018_LAYOUT = IslesLayout(
    "isles2018",
    "ISLES 2018 (SMIR export: case_<N>/SMIR.Brain.XX.O.CT_4DPWI.<id>/...): CTP, RAPID maps, DWI core",
    "the TRAINING (or TESTING) folder holding case_<N>/, or the folder holding both",
)
ISLES2024_LAYOUT = IslesLayout(
    "isles2024",
    "ISLES 2024 (raw_data/ and derivatives/ of the release): CTP, icobrain cva maps, follow-up lesion",
    "the release folder holding raw_data/ and derivatives/",
    spaces=True,
)
#: the layouts of this module, by name
LAYOUTS = {layout.name: layout for layout in (ISLES2018_LAYOUT, ISLES2024_LAYOUT)}


@user_facing("ctp-convert")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in LAYOUTS:
        print(f"usage: ctp-convert {{{','.join(LAYOUTS)}}} SRC BIDS_DIR [options]", file=sys.stderr)
        if argv and argv[0] in ("-h", "--help"):
            return 0
        print(f"ctp-convert: error: the first argument names the dataset: {', '.join(LAYOUTS)}.", file=sys.stderr)
        return 2
    layout = LAYOUTS[argv[0]]
    parser = argparse.ArgumentParser(prog=f"ctp-convert {layout.name}", description=layout.summary)
    layout.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"ctp_nipype {__version__}")
    return layout.run(parser.parse_args(argv[1:]))
