"""Print the OSIPI DSC reference-object table (per case and method) as markdown.

Usage::

    python benchmarks/studies/osipi_table.py [path/to/dsc_data.csv] [--network [--weights FILE]]

Without an argument it reads the object vendored in ``ctp_nipype/data/osipi-dsc-dro/``.
The loading, fitting and formatting live in :mod:`ctp_nipype.sims.osipi`, which
``tests/test_osipi.py`` grades, so that the table and the tests measure the same thing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctp_nipype.sims import osipi


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", help=f"the object's dsc_data.csv (default: {osipi.DRO_PATH})")
    parser.add_argument("--network", action="store_true", help="add the perfusion Transformer's rows")
    parser.add_argument("--weights", help="network weights (default: the shipped ones)")
    args = parser.parse_args(argv)
    path = Path(args.csv) if args.csv else osipi.DRO_PATH
    if not path.is_file():
        parser.error(f"{path} not found; pass the path to the object's dsc_data.csv")
    rows = osipi.table_rows(osipi.load_dro(path), network_weights=args.weights, with_network=args.network)
    print(osipi.markdown_table(rows))


if __name__ == "__main__":
    main()
