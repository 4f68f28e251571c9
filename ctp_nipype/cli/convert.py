"""``ctp-convert``: bring scans into a BIDS dataset that ``ctp-bids-app`` runs on.

The first argument names a source layout; a folder instead of a layout name means ``dicom``::

    ctp-convert DICOM_DIR BIDS_DIR --participant-label 01 [--session-label 01] [--series-uid UID] [--keep-source]
    ctp-convert dicom DICOM_DIR BIDS_DIR --participant-label 01 ...
    ctp-convert LAYOUT SRC BIDS_DIR ...          (other layouts registered in LAYOUTS)

Each layout is an object with ``name``, ``summary`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, registered in :data:`LAYOUTS` as ``"module:attribute"`` and imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .. import __version__
from ._errors import user_facing

#: layout name -> "module:attribute" of its layout object (imported lazily); the first is the default
LAYOUTS = {
    "dicom": "ctp_nipype.cli.convert:DICOM_LAYOUT",
    "isles2018": "ctp_nipype.cli.convert_datasets:ISLES2018_LAYOUT",
    "isles2024": "ctp_nipype.cli.convert_datasets:ISLES2024_LAYOUT",
}
DEFAULT_LAYOUT = "dicom"


class DicomLayout:
    """A folder of DICOM files (the CT perfusion series among other series) -> ``sub-L[_ses-S]_ctp.nii.gz``."""

    name = "dicom"
    summary = "a folder of DICOM files from the scanner or PACS (the perfusion series is found among the others)"

    def add_arguments(self, parser):
        parser.add_argument("dicom_dir", type=Path, help="folder of DICOM files (searched recursively)")
        parser.add_argument("bids_dir", type=Path, help="BIDS dataset to write into (created if missing)")
        parser.add_argument("--participant-label", required=True, metavar="LABEL", help="subject label (sub-LABEL)")
        parser.add_argument("--session-label", metavar="LABEL", help="session label (ses-LABEL), optional")
        parser.add_argument("--series-uid", metavar="UID",
                            help="SeriesInstanceUID of the perfusion series when the folder holds several")
        parser.add_argument("--keep-source", action="store_true",
                            help="copy the series' DICOM files to BIDS_DIR/sourcedata/sub-L[/ses-S]/ctp/ (they "
                            "identify the patient) so that ctp-bids-app --dicom-out can reference the source study")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing converted scan")

    def run(self, args):
        from ..dicom.convert import dicom_to_bids
        from ..dicom.read import describe

        out_file, ctp = dicom_to_bids(
            args.dicom_dir, args.bids_dir, args.participant_label, args.session_label, args.series_uid,
            keep_source=args.keep_source, overwrite=args.overwrite,
        )
        for line in describe(ctp):
            print(line)
        print(f"wrote {out_file} and its sidecar {out_file.name.replace('.nii.gz', '.json')}")
        if args.keep_source:
            print(f"kept the source series under {args.bids_dir / 'sourcedata'} (identifies the patient)")
        return 0


DICOM_LAYOUT = DicomLayout()


def load_layout(name):
    """The layout object registered under ``name``."""
    module, _, attribute = LAYOUTS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def split_layout(argv):
    """``(layout name, remaining arguments)``: the first positional when it names a layout, else the default.

    >>> split_layout(["dicom", "in", "out"])
    ('dicom', ['in', 'out'])
    >>> split_layout(["/data/dicom_folder", "out", "--participant-label", "01"])
    ('dicom', ['/data/dicom_folder', 'out', '--participant-label', '01'])
    """
    argv = list(argv)
    if argv and argv[0] in LAYOUTS and not Path(argv[0]).is_dir():
        return argv[0], argv[1:]
    return DEFAULT_LAYOUT, argv


def _overview():
    lines = ["usage: ctp-convert [LAYOUT] SOURCE BIDS_DIR [options]", "", "layouts (default: dicom):"]
    for name in LAYOUTS:
        lines.append(f"  {name:<12} {load_layout(name).summary}")
    lines.append("")
    lines.append("ctp-convert LAYOUT -h shows a layout's options.")
    return "\n".join(lines)


@user_facing("ctp-convert")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0
    if argv[0] == "--version":
        print(f"ctp_nipype {__version__}")
        return 0
    name, rest = split_layout(argv)
    layout = load_layout(name)
    parser = argparse.ArgumentParser(prog=f"ctp-convert {name}", description=layout.summary)
    layout.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(rest)
    return layout.run(args)


if __name__ == "__main__":
    sys.exit(main())
