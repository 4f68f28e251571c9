"""External validation: OSIPI's DSC digital reference object (issue 11).

The object (``ctp_nipype/data/osipi-dsc-dro/dsc_data.csv``, see the README beside it) holds 14 noisy tissue
concentration curves with one arterial input, 161 frames at 1.243 s, in units
that carry no hematocrit or density factor (kappa_H = 1, rho = 1). Every case
goes through :class:`ctp_nipype.perfusion.svd.SVDModel` with sSVD, cSVD and
oSVD, as it is (no resampling, no baseline subtraction: the curves already are
concentrations), and must meet

* OSIPI's own tolerances (``numpy.testing.assert_allclose``: CBV rtol 0.1 /
  atol 1 ml/100 ml; CBF rtol 0.1 / atol 15 ml/100 ml/min), and
* tighter bounds measured on this object (see the constants below), chosen so
  that a constant 27% error (kappa_H = 0.73 lost or applied twice) fails in
  every case; :func:`test_tight_bounds_catch_a_lost_kappa_h` checks that they do.

What the object really is (checked by :func:`test_dro_generative_model`): the
curves come from the simulation code of Chakwizira et al.
(github.com/arthur-chakwizira/BezierCurveDeconvolution,
``simulation/simulate_dsc_data.m``): ``C = CBF * dt * filter(Ca, 1, R)``, a
rectangle-rule (left Riemann sum) convolution, and their residue function is
the gamma transit-time distribution with shape 1, i.e. ``R = exp(-t / MTT)``,
not shape 3 as the README (after OSIPI's docstring) says. Two consequences:

* The rectangle rule gives the curves an area of ``CBF * dt * sum_k R(k dt)``
  per unit of arterial area, that is ``CBV * x / (1 - exp(-x))`` with
  ``x = dt / MTT``: the object's own "discrete" CBV, up to 19% above the
  nominal CBV for MTT = 3.4 s. Our area-ratio CBV is compared with it tightly.
* The exponential residue peaks at t = 0, where sSVD's trapezoidal Toeplitz
  matrix weights ``K[0]`` by one half while the rectangle rule weights it by
  one: sSVD overestimates CBF here (up to +28% at low flow), whereas cSVD and
  oSVD, whose block-circulant matrix weights ``K[0]`` by one, underestimate it
  at high flow (regularisation of a sharp peak).

The object is vendored with its licence in ``ctp_nipype/data/osipi-dsc-dro/``
and read by :mod:`ctp_nipype.sims.osipi`, which ``benchmarks/studies/osipi_table.py``
uses to print the per-case table.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.sims.osipi import METHODS, fit_case, fit_case_network, load_dro
N_FRAMES = 161
FRAME_INTERVAL = 1.243  # s

# OSIPI's tolerances for this object (test/DSCmodels/DSCmodels_data.py).
OSIPI_CBV = {"rtol": 0.1, "atol": 1.0}
OSIPI_CBF = {"rtol": 0.1, "atol": 15.0}

#: Measured CBF (ml/100 ml/min) per case and method, kappa_H = rho = 1, the
#: default thresholds (sSVD 0.2, cSVD 0.1, oSVD OI <= 0.035 over the default
#: ladder). Printed by ``benchmarks/studies/osipi_table.py``; update it (and
#: docs/validation.md) only when a method is changed on purpose.
MEASURED_CBF = {
    "CBV4_CBF10": {"ssvd": 12.67, "csvd": 8.98, "osvd": 8.92},
    "CBV4_CBF20": {"ssvd": 24.89, "csvd": 19.35, "osvd": 19.33},
    "CBV4_CBF30": {"ssvd": 36.22, "csvd": 25.67, "osvd": 27.96},
    "CBV4_CBF40": {"ssvd": 45.94, "csvd": 31.21, "osvd": 33.33},
    "CBV4_CBF50": {"ssvd": 56.27, "csvd": 39.78, "osvd": 41.95},
    "CBV4_CBF60": {"ssvd": 65.07, "csvd": 45.61, "osvd": 51.09},
    "CBV4_CBF70": {"ssvd": 71.02, "csvd": 48.93, "osvd": 53.73},
    "CBV2_CBF5": {"ssvd": 6.34, "csvd": 6.45, "osvd": 6.04},
    "CBV2_CBF10": {"ssvd": 12.75, "csvd": 9.36, "osvd": 9.39},
    "CBV2_CBF15": {"ssvd": 18.82, "csvd": 13.71, "osvd": 13.26},
    "CBV2_CBF20": {"ssvd": 24.25, "csvd": 17.94, "osvd": 18.46},
    "CBV2_CBF25": {"ssvd": 27.49, "csvd": 19.52, "osvd": 20.02},
    "CBV2_CBF30": {"ssvd": 32.07, "csvd": 22.86, "osvd": 23.46},
    "CBV2_CBF35": {"ssvd": 35.44, "csvd": 24.37, "osvd": 24.48},
}
CASES = tuple(MEASURED_CBF)

#: Each case's CBF must stay within this fraction of its measured value. The
#: estimates are deterministic (fixed data); 10% leaves room for rounding and
#: BLAS differences (a perturbation of 1/8 of the object's noise moved oSVD's
#: CBF by at most 7%, sSVD's by 2%), while a 27% error (x0.73 or x1/0.73)
#: misses it by 17 points or more.
CBF_REGRESSION_RTOL = 0.10

#: Envelope of est/true CBF over the 14 cases, measured (in brackets) and
#: stated with a small margin: sSVD [1.01, 1.28], cSVD [0.70, 1.29],
#: oSVD [0.70, 1.21].
CBF_RATIO_ENVELOPE = {"ssvd": (0.95, 1.35), "csvd": (0.65, 1.35), "osvd": (0.65, 1.25)}

#: CBV (the same area ratio for every method) against the object's discrete
#: CBV ``CBV * x / (1 - exp(-x))``: measured within [-6.2%, +4.3%]; a 27% error
#: leaves it by 24 points or more.
CBV_DISCRETE_RTOL = 0.10
#: CBV against the nominal CBV: measured within [-3.7%, +18.9%] (the excess is
#: the rectangle rule's, see above); not tight enough alone to catch a lost
#: kappa_H at the shortest MTT, hence the bound above.
CBV_NOMINAL_RTOL = 0.20


@lru_cache(maxsize=None)
def dro_cases():
    """The vendored object's cases by short name."""
    return {case.name: case for case in load_dro()}


@lru_cache(maxsize=None)
def _fit_cached(name, method, kappa_h=1.0, rho=1.0):
    return fit_case(dro_cases()[name], method, kappa_h, rho)


#: The network's (CBF, CBV) per case, kappa_H = rho = 1, the shipped weights, the object resampled to 2 s
#: frames (``ctp_nipype.sims.osipi.NETWORK_FRAME_INTERVAL``); printed by ``benchmarks/studies/osipi_table.py --network`` and shown in
#: docs/validation.md. Update it with the weights.
MEASURED_NETWORK = {
    "CBV4_CBF10": (12.69, 4.147),
    "CBV4_CBF20": (21.95, 4.151),
    "CBV4_CBF30": (30.38, 4.276),
    "CBV4_CBF40": (34.67, 4.499),
    "CBV4_CBF50": (40.93, 4.543),
    "CBV4_CBF60": (44.49, 4.727),
    "CBV4_CBF70": (47.79, 4.758),
    "CBV2_CBF5": (7.28, 1.957),
    "CBV2_CBF10": (11.39, 2.095),
    "CBV2_CBF15": (14.39, 2.089),
    "CBV2_CBF20": (18.51, 2.313),
    "CBV2_CBF25": (19.94, 2.167),
    "CBV2_CBF30": (22.78, 2.321),
    "CBV2_CBF35": (24.03, 2.332),
}


def _ids(method, name):
    return f"{method}-{name}"


CASE_METHOD = [pytest.param(m, c, id=_ids(m, c)) for m in METHODS for c in CASES]


# --------------------------------------------------------------------------- the object itself


def test_dro_file_is_as_documented():
    cases = dro_cases()
    assert sorted(cases) == sorted(CASES)
    for case in cases.values():
        assert case.c_tis.size == N_FRAMES and case.c_aif.size == N_FRAMES
        assert case.tr == pytest.approx(FRAME_INTERVAL)
        # already concentrations: the pre-bolus frames sit at zero, within the noise
        assert abs(case.c_aif[:15].mean()) < 0.05 * case.c_aif.max()
        assert abs(case.c_tis[:15].mean()) < 0.05 * case.c_tis.max()


def test_dro_generative_model():
    """The curves are ``CBF * dt * (Ca (x) exp(-t/MTT))`` with the rectangle rule, to the noise."""
    from scipy import stats

    for case in dro_cases().values():
        t, dt, n = case.frame_times, case.tr, N_FRAMES
        noise = np.std(np.concatenate([case.c_tis[:15], case.c_tis[-40:]]))
        misfit = {}
        for shape in (1, 3):
            residue = stats.gamma.sf(t, shape, scale=case.mtt / shape)
            model = case.cbf / 6000 * dt * np.convolve(case.c_aif, residue)[:n]
            misfit[shape] = np.std(case.c_tis - model)
        assert misfit[1] < 1.5 * noise, case.name
        assert misfit[1] < misfit[3], case.name


# --------------------------------------------------------------------------- OSIPI's tolerances


@pytest.mark.parametrize("method, name", CASE_METHOD)
def test_osipi_tolerance(method, name):
    case = dro_cases()[name]
    cbf, cbv = _fit_cached(name, method)
    np.testing.assert_allclose(cbv, case.cbv, **OSIPI_CBV, err_msg=f"CBV {method} {name}")
    np.testing.assert_allclose(cbf, case.cbf, **OSIPI_CBF, err_msg=f"CBF {method} {name}")


# --------------------------------------------------------------------------- tighter, measured bounds


@pytest.mark.parametrize("method, name", CASE_METHOD)
def test_cbf_within_measured_envelope(method, name):
    case = dro_cases()[name]
    cbf, _ = _fit_cached(name, method)
    low, high = CBF_RATIO_ENVELOPE[method]
    assert low <= cbf / case.cbf <= high, f"{method} {name}: CBF {cbf:.2f} vs true {case.cbf:g}"


@pytest.mark.parametrize("method, name", CASE_METHOD)
def test_cbf_matches_measured_value(method, name):
    cbf, _ = _fit_cached(name, method)
    np.testing.assert_allclose(cbf, MEASURED_CBF[name][method], rtol=CBF_REGRESSION_RTOL, atol=0)


@pytest.mark.parametrize("method, name", CASE_METHOD)
def test_cbv_matches_discrete_truth(method, name):
    case = dro_cases()[name]
    _, cbv = _fit_cached(name, method)
    np.testing.assert_allclose(cbv, case.discrete_cbv, rtol=CBV_DISCRETE_RTOL, atol=0)
    np.testing.assert_allclose(cbv, case.cbv, rtol=CBV_NOMINAL_RTOL, atol=0)


@pytest.mark.parametrize(
    "kappa_h, rho", [(0.73, 1.0), (1.0, 0.73)], ids=["kappa_h-applied", "kappa_h-inverted"]
)
@pytest.mark.parametrize("method", METHODS)
def test_tight_bounds_catch_a_lost_kappa_h(method, kappa_h, rho):
    """A constant 27% error in the constants fails the tight bounds in every case."""
    for name, case in dro_cases().items():
        cbf, cbv = _fit_cached(name, method, kappa_h, rho)
        reference = MEASURED_CBF[name][method]
        assert abs(cbf / reference - 1) > CBF_REGRESSION_RTOL, (method, name, cbf)
        assert abs(cbv / case.discrete_cbv - 1) > CBV_DISCRETE_RTOL, (method, name, cbv)


# --------------------------------------------------------------------------- timing


def _gamma_variate_aif(t, t0=20.0, b=1.5, r=3.0):
    """The object's arterial input (simulate_dsc_data.m), noise free."""
    s = np.clip(t - t0, 0.0, None)
    return s**r * np.exp(-s / b)


@pytest.mark.parametrize("n_frames", [N_FRAMES, 240])
@pytest.mark.parametrize("method", METHODS)
def test_model_takes_frames_as_they_are(method, n_frames):
    """161 frames at 1.243 s (and more) are used as given: no 1 s frames, no 120-frame cap."""
    dt = FRAME_INTERVAL
    t = np.arange(n_frames) * dt
    aif = _gamma_variate_aif(t)
    cbf, mtt, delay = 50.0, 4.0, 4  # ml/100 ml/min, s, frames
    k = cbf / 6000 * np.exp(-t / mtt)
    tissue = dt * np.convolve(aif, k)[:n_frames]  # the object's rectangle rule
    delayed = np.concatenate([np.zeros(delay), tissue[:-delay]])

    model = SVDModel(aif, t, method=method, kappa_h=1, rho=1)
    assert model.dt == pytest.approx(dt)
    assert model.params["FrameInterval"] == pytest.approx(dt)
    assert model.singular_values.size == (n_frames if method == "ssvd" else 2 * n_frames)
    fit = model.fit(np.stack([tissue, delayed]))
    assert fit.residue.shape == (2, n_frames)

    x = dt / mtt
    discrete_cbv = cbf * mtt / 60 * x / -np.expm1(-x)
    np.testing.assert_allclose(fit.cbv[0], discrete_cbv, rtol=1e-3)
    if method == "osvd":
        # noise free, oSVD keeps every component: the rectangle-rule curve gives CBF back;
        # a 1 s frame assumption would be off by 1.243
        np.testing.assert_allclose(fit.cbf, cbf, rtol=0.02)
    if method != "ssvd":
        # block-circulant: a delay of 4 frames moves Tmax by 4 * 1.243 s
        assert fit.tmax[1] - fit.tmax[0] == pytest.approx(delay * dt, abs=1e-4)


# --------------------------------------------------------------------------- the network (shown, not graded)


def _shipped_weights():
    from ctp_nipype.nn.weights import shipped_weights_available

    if not shipped_weights_available():
        pytest.skip("no trained weights shipped in ctp_nipype/data/")


@lru_cache(maxsize=None)
def _network_fits():
    return {name: fit_case_network(case) for name, case in dro_cases().items()}


def test_network_runs_on_the_object_and_its_result_is_what_the_docs_show():
    """Issue 11: the network's rows are shown in docs/validation.md, not graded by OSIPI's tolerance.

    The object (161 frames at 1.243 s) is resampled to 100 frames at 2 s (``ctp_nipype.sims.osipi.NETWORK_FRAME_INTERVAL``).
    Asserted: finite, positive estimates; CBF increasing with the true CBF within each CBV group (the network
    ranks flows), and the estimates within 10% of the values measured for docs/validation.md
    (:data:`MEASURED_NETWORK`), so that the table there stays true.
    """
    _shipped_weights()
    fits = _network_fits()
    for name, (cbf, cbv) in fits.items():
        assert np.isfinite(cbf) and np.isfinite(cbv) and cbf > 0 and cbv > 0, name
        np.testing.assert_allclose(cbf, MEASURED_NETWORK[name][0], rtol=0.1, err_msg=f"CBF {name}")
        np.testing.assert_allclose(cbv, MEASURED_NETWORK[name][1], rtol=0.1, err_msg=f"CBV {name}")
    for group in ("CBV4", "CBV2"):
        names = sorted((n for n in fits if n.startswith(group)), key=lambda n: dro_cases()[n].cbf)
        estimates = [fits[n][0] for n in names]
        assert estimates == sorted(estimates), f"{group}: network CBF not increasing with the true CBF"
