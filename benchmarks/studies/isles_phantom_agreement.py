"""The ISLES agreement harness end to end on phantoms: the numbers ``ctp-compare`` prints, measured.

Writes ``--cases`` digital brain phantoms (seeds 0, 1, ...; lesion size and side vary with the seed) in ISLES
2018's layout with reference maps made from each phantom's truth (``ctp_nipype.sims.isles``; optionally
distorted: ``--cbf-scale``, ``--tmax-shift``), converts them with ``ctp-convert isles2018``, runs
``ctp-bids-app ... participant`` with ``--methods``, then ``ctp-compare``, and prints its summary tables.
Against a truth-derived reference the table says how far each method's maps are from the truth, in the
same terms as a comparison with RAPID on ISLES 2018 (docs/validation.md).

    python benchmarks/studies/isles_phantom_agreement.py [--cases 6] [--noise-hu 8] [--methods ssvd osvd transformer]
        [--cbf-scale 1.0] [--tmax-shift 0.0] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
import time
from pathlib import Path

from ctp_nipype.cli import bids_app
from ctp_nipype.cli.compare import main as compare
from ctp_nipype.cli.convert_datasets import main as convert
from ctp_nipype.sims.isles import (
    distort_reference,
    make_isles_phantom,
    truth_reference_maps,
    write_isles2018_case,
)


def _print_table(path, columns):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            value = row[c]
            try:
                cells.append(f"{float(value):.3g}" if c not in ("n",) else value)
            except ValueError:
                cells.append(value)
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--noise-hu", type=float, default=8.0)
    parser.add_argument("--methods", nargs="+", default=["ssvd", "osvd", "transformer"])
    parser.add_argument("--cbf-scale", type=float, default=1.0)
    parser.add_argument("--tmax-shift", type=float, default=0.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    root = args.work or Path(tempfile.mkdtemp(prefix="isles_phantom_"))
    start = time.monotonic()
    for number in range(1, args.cases + 1):
        phantom = make_isles_phantom(seed=number - 1, noise_sd_hu=args.noise_hu)
        reference = distort_reference(truth_reference_maps(phantom), cbf_scale=args.cbf_scale,
                                      tmax_shift_s=args.tmax_shift)
        write_isles2018_case(root / "TRAINING", number, phantom, reference=reference)
    bids, out = root / "bids", root / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert convert(["isles2018", str(root / "TRAINING"), str(bids)]) == 0
        assert bids_app.main([str(bids), str(out), "participant", "--methods", *args.methods, "-w",
                              str(root / "work"), "--nprocs", "1", "--device", "cpu"]) == 0
    assert compare([str(out), str(bids / "derivatives" / "reference"), str(root / "cmp")]) == 0
    print(f"\n{args.cases} phantoms (small, {args.noise_hu:g} HU), reference = truth x CBF {args.cbf_scale:g}, "
          f"Tmax + {args.tmax_shift:g} s; {time.monotonic() - start:.0f} s in all; tables in {root / 'cmp'}\n")
    _print_table(root / "cmp" / "agreement_desc-mapsummary_stats.tsv",
                 ["method", "map", "our_map", "n", "pearson_median", "spearman_median"])
    print()
    _print_table(root / "cmp" / "agreement_desc-volumesummary_stats.tsv",
                 ["method", "measure", "n", "icc", "bias", "loa_low", "loa_high", "mean_ours", "mean_reference",
                  "dice_median"])
    print()
    _print_table(root / "cmp" / "agreement_desc-callsummary_stats.tsv",
                 ["method", "profile", "n", "agreement", "kappa", "n_positive_ours", "n_positive_reference"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
