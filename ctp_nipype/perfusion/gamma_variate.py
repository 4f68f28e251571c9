"""The gamma-variate bolus: its curve and its analytic area.

A model of a first pass used by the estimators (the partial-volume
correction's first-pass fits, :mod:`.aif`) and by the simulators
(:mod:`ctp_nipype.sims`, which import it from here: an estimator never
depends on a simulator).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def gamma_variate_aif(t, t0=8.0, alpha=3.0, beta=1.5, peak=400.0):
    """Gamma-variate AIF ``a (t - t0)^alpha exp(-(t - t0) / beta)`` (Zeng et al. 2025, eq. 3) in HU.

    Parametrised by its peak height ``peak`` (HU above baseline) instead of
    ``a``; the peak lies at ``t0 + alpha * beta``. Zero before ``t0``.

    Parameters are scalars or arrays of shape ``(n,)`` (one curve each, then
    the result has shape ``(n, T)``).

    >>> t = np.arange(0, 30.0)
    >>> c = gamma_variate_aif(t, t0=5, alpha=3, beta=1.0, peak=300)
    >>> float(c.max()), int(t[c.argmax()])
    (300.0, 8)
    """
    t = np.asarray(t, dtype=float)
    params = [np.asarray(v, dtype=float) for v in (t0, alpha, beta, peak)]
    t0, alpha, beta, peak = (p[..., None] for p in params)
    x = np.clip(t - t0, 0.0, None)
    tpeak = alpha * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(x > 0, np.exp(alpha * np.log(np.where(x > 0, x, 1) / tpeak) - (x - tpeak) / beta), 0.0)
    out = peak * shape
    if out.ndim == 2 and all(p.ndim == 0 for p in params):
        return out[0]  # every parameter a scalar: one curve
    return out


def gamma_variate_area(peak, alpha, beta):
    """Analytic area (HU s) of the gamma variate of :func:`gamma_variate_aif`.

    ``integral peak (x / (alpha beta))^alpha exp(alpha - x / beta) dx
    = peak * beta * exp(alpha) * alpha^-alpha * Gamma(alpha + 1)``.

    >>> t = np.arange(0, 200, 0.01)
    >>> numeric = np.trapezoid(gamma_variate_aif(t, t0=5, alpha=3, beta=1.5, peak=400), t)
    >>> round(float(gamma_variate_area(400, 3, 1.5)), 1), round(float(numeric), 1)
    (2678.1, 2678.1)
    """
    peak, alpha, beta = (np.asarray(v, dtype=float) for v in (peak, alpha, beta))
    return peak * beta * np.exp(alpha - alpha * np.log(alpha) + gammaln(alpha + 1.0))
