"""Print the OSIPI DSC reference-object table (per case and method) as markdown.

Usage::

    python benchmarks/osipi_table.py [path/to/dsc_data.csv] [--network [--weights FILE]]

Without an argument the CSV is looked up as the tests do: the environment
variable ``CTP_OSIPI_DRO``, else ``<repo>/../shared/external/osipi-dsc-dro/dsc_data.csv``.
The loading, fitting and formatting live in ``tests/test_osipi_dro.py`` so that
the table and the test measure the same thing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import test_osipi_dro as dro  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", help="the object's dsc_data.csv (default: as the tests find it)")
    parser.add_argument("--network", action="store_true", help="add the perfusion Transformer's rows")
    parser.add_argument("--weights", help="network weights (default: the shipped ones)")
    args = parser.parse_args(argv)
    path = Path(args.csv) if args.csv else dro.dro_path()
    if not path.is_file():
        parser.error(f"{path} not found; pass the path or set {dro.ENV_VAR}")
    rows = dro.table_rows(dro.load_dro(path), network_weights=args.weights, with_network=args.network)
    print(dro.markdown_table(rows))


if __name__ == "__main__":
    main()
