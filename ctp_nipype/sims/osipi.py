"""OSIPI's DSC digital reference object: its cases, and our estimates on them (issue 11).

The object (``ctp_nipype/data/osipi-dsc-dro/dsc_data.csv``, Apache-2.0, provenance in the README beside it)
holds 14 noisy tissue concentration curves with one arterial input, 161 frames at 1.243 s, in units that carry
no hematocrit or density factor (kappa_H = 1, rho = 1). ``tests/test_osipi.py`` grades the estimates and
``benchmarks/studies/osipi_table.py`` prints them, both through this module, so that the table and the tests measure
the same thing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..perfusion.constants import NETWORK_METHOD, SVD_METHODS
from ..perfusion.svd import SVDModel

#: the vendored object
DRO_PATH = Path(__file__).resolve().parents[1] / "data" / "osipi-dsc-dro" / "dsc_data.csv"

METHODS = SVD_METHODS  # the SVD family, as perfusion.constants names it

#: The network serves 1-2 s frames and 45-120 frames: the object's 161 frames at 1.243 s (200 s) are
#: resampled linearly onto 100 frames at 2 s (0-198 s) for it; the SVD family takes them as they are.
NETWORK_FRAME_INTERVAL = 2.0


@dataclass(frozen=True)
class DROCase:
    """One case of the reference object."""

    label: str  # the object's label, e.g. test_CNR200_CBV4_CBF10_delay0_dispersion0
    c_tis: np.ndarray
    c_aif: np.ndarray
    tr: float  # s
    cbv: float  # ml/100 ml
    cbf: float  # ml/100 ml/min

    @property
    def name(self):
        """Short name, e.g. ``CBV4_CBF10``."""
        parts = self.label.split("_")
        return "_".join(p for p in parts if p.startswith(("CBV", "CBF")))

    @property
    def frame_times(self):
        return np.arange(self.c_tis.size) * self.tr

    @property
    def mtt(self):
        return 60.0 * self.cbv / self.cbf

    @property
    def discrete_cbv(self):
        """The CBV that the object's rectangle-rule curves carry (exponential residue)."""
        x = self.tr / self.mtt
        return self.cbv * x / -np.expm1(-x)


def load_dro(path=None):
    """Read the object's CSV (default the vendored one) into a list of :class:`DROCase`."""
    path = DRO_PATH if path is None else Path(path)
    cases = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cases.append(
                DROCase(
                    label=row["label"],
                    c_tis=np.array(row["C_tis"].split(), dtype=float),
                    c_aif=np.array(row["C_aif"].split(), dtype=float),
                    tr=float(row["tr"]),
                    cbv=float(row["cbv"]),
                    cbf=float(row["cbf"]),
                )
            )
    return cases


def fit_case(case, method, kappa_h=1.0, rho=1.0):
    """(CBF, CBV) of one case with one SVD method, curves taken as they are."""
    model = SVDModel(case.c_aif, case.frame_times, method=method, kappa_h=kappa_h, rho=rho)
    fit = model.fit(case.c_tis[np.newaxis])
    return float(fit.cbf[0]), float(fit.cbv[0])


def fit_case_network(case, weights=None, kappa_h=1.0, rho=1.0):
    """(CBF, CBV) of one case with the perfusion Transformer, on the resampled grid (see above)."""
    from ..nn.inference import estimate_curves
    from ..perfusion.timing import resample_to_uniform

    curves, times = resample_to_uniform(np.stack([case.c_aif, case.c_tis]), case.frame_times, NETWORK_FRAME_INTERVAL)
    out = estimate_curves(curves[0], curves[1:], times, weights=weights, kappa_h=kappa_h, rho=rho)
    return float(out["cbf"][0]), float(out["cbv"][0])


def table_rows(cases=None, network_weights=None, with_network=False):
    """One dict per method and case: truth, estimate and ratio for CBF and CBV.

    With ``with_network`` the perfusion Transformer's rows follow (``network_weights``,
    default the shipped weights).
    """
    cases = load_dro() if cases is None else cases
    rows = []
    for method in METHODS + ((NETWORK_METHOD,) if with_network else ()):
        for case in cases:
            if method == "transformer":
                cbf, cbv = fit_case_network(case, network_weights)
            else:
                cbf, cbv = fit_case(case, method)
            rows.append(
                {
                    "case": case.name,
                    "method": method,
                    "true_cbf": case.cbf,
                    "est_cbf": cbf,
                    "cbf_ratio": cbf / case.cbf,
                    "true_cbv": case.cbv,
                    "est_cbv": cbv,
                    "cbv_ratio": cbv / case.cbv,
                }
            )
    return rows


def markdown_table(rows):
    """The rows of :func:`table_rows` as a markdown table."""
    lines = [
        "| case | method | true CBF | est CBF | ratio | true CBV | est CBV | ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['method']} | {r['true_cbf']:g} | {r['est_cbf']:.2f} | {r['cbf_ratio']:.3f} "
            f"| {r['true_cbv']:g} | {r['est_cbv']:.3f} | {r['cbv_ratio']:.3f} |"
        )
    return "\n".join(lines)
