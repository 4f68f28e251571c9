"""Simulated CT perfusion curves (Zeng et al. 2025, section 2.3, eqs. 3-7).

The building blocks, each vectorised over a batch (leading axes broadcast,
time last):

* global AIFs: :func:`gamma_variate_aif` (eq. 3) and :func:`parker_aif` (eq. 4),
  in HU above baseline;
* the residue function of a gamma transit-time distribution,
  :func:`residue_function` (eq. 5), ``r(0) = 1``;
* delay and dispersion of the global AIF into the local AIF,
  :func:`delay_curves` and :func:`disperse` (eq. 6, exponential VTF);
* the tissue curve ``C = Ca_local (x) K`` with ``K = (rho / kappa_H) * CBF / 6000 * r``
  (:func:`tissue_curves`, eq. 7 with the constants of the conventions).

Curves are computed on a fine grid (``FINE_DT`` = 0.05 s by default) and then
sampled at the frame times (:func:`sample_curves`), so that the discretisation
error of the simulator is far below the one of the methods under test.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from .constants import CBF_UNIT_FACTOR, KAPPA_H, RHO

#: step of the fine simulation grid in seconds
FINE_DT = 0.05

#: Parker et al. (2006) population AIF parameters (time in minutes, concentration in mM).
PARKER_2006 = {
    "A1": 0.809,
    "A2": 0.330,
    "T1": 0.17046,
    "T2": 0.365,
    "sigma1": 0.0563,
    "sigma2": 0.132,
    "alpha": 1.050,
    "beta": 0.1685,
    "s": 38.078,
    "tau": 0.483,
}


def _col(value):
    """Parameters as column arrays so that they broadcast against a time axis."""
    value = np.asarray(value, dtype=float)
    return value[..., None]


def gamma_variate_aif(t, t0=8.0, alpha=3.0, beta=1.5, peak=400.0):
    """Gamma-variate AIF ``a (t - t0)^alpha exp(-(t - t0) / beta)`` (eq. 3) in HU.

    Parametrised by its peak height ``peak`` (HU above baseline) instead of
    ``a``; the peak lies at ``t0 + alpha * beta``. Zero before ``t0``.

    Parameters are scalars or arrays of shape ``(n,)`` (one curve each).

    >>> t = np.arange(0, 30.0)
    >>> c = gamma_variate_aif(t, t0=5, alpha=3, beta=1.0, peak=300)
    >>> float(c.max()), int(t[c.argmax()])
    (300.0, 8)
    """
    t = np.asarray(t, dtype=float)
    t0, alpha, beta, peak = (_col(v) for v in (t0, alpha, beta, peak))
    x = np.clip(t - t0, 0.0, None)
    tpeak = alpha * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(x > 0, np.exp(alpha * np.log(np.where(x > 0, x, 1) / tpeak) - (x - tpeak) / beta), 0.0)
    return _squeeze(peak * shape, t0, alpha, beta, peak)


def _squeeze(out, *params):
    """Drop the batch axis when every parameter was a scalar."""
    if all(np.ndim(p) <= 1 and np.size(p) == 1 for p in params) and out.ndim == 2:
        return out[0]
    return out


def parker_aif(t, t0=0.0, peak=400.0, params=None):
    """Parker et al. (2006) population AIF (eq. 4), scaled to ``peak`` HU.

    Two Gaussians (first pass and recirculation) plus a sigmoid-modulated
    exponential (wash-out). ``t`` in seconds; the published curve's time
    origin (injection) is shifted by ``t0`` seconds, and the curve is scaled
    so that its maximum is ``peak`` HU above baseline.

    >>> t = np.arange(0, 80.0)
    >>> c = parker_aif(t, peak=350)
    >>> round(float(c.max()), 6), int(t[c.argmax()])
    (350.0, 10)
    """
    p = dict(PARKER_2006, **(params or {}))
    t = np.asarray(t, dtype=float)
    t0c, peakc = _col(t0), _col(peak)
    minutes = (t - t0c) / 60.0
    curve = (
        p["A1"] / (p["sigma1"] * np.sqrt(2 * np.pi)) * np.exp(-((minutes - p["T1"]) ** 2) / (2 * p["sigma1"] ** 2))
        + p["A2"] / (p["sigma2"] * np.sqrt(2 * np.pi)) * np.exp(-((minutes - p["T2"]) ** 2) / (2 * p["sigma2"] ** 2))
        + p["alpha"] * np.exp(-p["beta"] * minutes) / (1 + np.exp(-p["s"] * (minutes - p["tau"])))
    )
    curve = np.where(minutes >= 0, curve, 0.0)
    return _squeeze(peakc * curve / curve.max(axis=-1, keepdims=True), t0c, peakc)


def residue_function(t, mtt, alpha=1.0):
    """Residue function ``r(t) = 1 - integral_0^t h`` of a gamma transit-time distribution (eq. 5).

    ``h`` has shape ``alpha`` and scale ``beta = mtt / alpha``, so its mean
    (the MTT) is ``mtt``: ``alpha = 1`` gives an exponential residue,
    ``alpha = 100`` nearly a box-car. ``r(0) = 1``; the flow-scaled residue
    of the methods is ``(rho / kappa_H) * CBF / 6000 * r``.

    >>> t = np.array([0.0, 4.0])
    >>> np.round(residue_function(t, mtt=4.0, alpha=1.0), 4)
    array([1.    , 0.3679])
    """
    t = np.asarray(t, dtype=float)
    mtt, alpha = _col(mtt), _col(alpha)
    beta = mtt / alpha
    return _squeeze(1.0 - gammainc(alpha, np.clip(t, 0, None) / beta), mtt, alpha)


def delay_curves(curves, dt, delay):
    """Shift curves later by ``delay`` seconds (linear interpolation, zero-filled).

    ``curves`` has time last; ``delay`` is a scalar or one value per curve.
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    n = curves.shape[-1]
    t = np.arange(n) * dt
    source = t - _col(delay)  # where each output sample comes from
    position = source / dt
    left = np.floor(position).astype(int)
    weight = position - left
    valid = (position >= 0) & (left < n - 1)
    left_c = np.clip(left, 0, n - 1)
    right_c = np.clip(left + 1, 0, n - 1)
    values = np.take_along_axis(curves, np.broadcast_to(left_c, curves.shape), -1) * (1 - weight)
    values += np.take_along_axis(curves, np.broadcast_to(right_c, curves.shape), -1) * weight
    last = position >= n - 1
    values = np.where(last, curves[..., -1:], values)
    return np.where(valid | last, values, 0.0)


def disperse(curves, dt, t_a):
    """Convolve curves with the exponential vascular transport function ``exp(-t/T_A) / T_A`` (eq. 6).

    ``t_a`` in seconds, scalar or one per curve; ``t_a = 0`` leaves a curve
    unchanged. The kernel is integrated exactly over each fine step, so the
    area of the curve is preserved (up to what leaves the time window).
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    n = curves.shape[-1]
    t_a = np.broadcast_to(np.asarray(t_a, dtype=float), curves.shape[:-1])
    t = np.arange(n) * dt
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ta = t_a[..., None]
        # exact mass of the kernel in [t_k, t_k + dt]
        kernel = np.where(ta > 0, np.exp(-t / np.where(ta > 0, ta, 1)) * (1 - np.exp(-dt / np.where(ta > 0, ta, 1))), 0.0)
    kernel = np.where(ta > 0, kernel, (t == 0).astype(float))
    length = 2 * n
    out = np.fft.irfft(np.fft.rfft(curves, length) * np.fft.rfft(kernel, length), length)[..., :n]
    return out


def flow_scaled_residue(residue, cbf, kappa_h=KAPPA_H, rho=RHO):
    """``K = (rho / kappa_H) * CBF / 6000 * r`` in 1/s, CBF in ml/100 g/min."""
    return (rho / kappa_h) * _col(cbf) / CBF_UNIT_FACTOR * residue


def tissue_curves(local_aif, flow_residue, dt):
    """``C = Ca_local (x) K`` on a fine grid (rectangle rule, valid for ``dt`` << frame interval)."""
    n = local_aif.shape[-1]
    length = 2 * n
    return dt * np.fft.irfft(np.fft.rfft(local_aif, length) * np.fft.rfft(flow_residue, length), length)[..., :n]


def sample_curves(curves, fine_dt, frame_times):
    """Sample fine-grid curves (starting at t = 0) at the given frame times (linear interpolation)."""
    curves = np.asarray(curves, dtype=float)
    position = np.asarray(frame_times, dtype=float) / fine_dt
    left = np.clip(np.floor(position).astype(int), 0, curves.shape[-1] - 2)
    weight = np.clip(position - left, 0, 1)
    return curves[..., left] * (1 - weight) + curves[..., left + 1] * weight


def add_noise(curves, snr_db, rng, reference=None):
    """Add zero-mean Gaussian noise at a given SNR in dB.

    SNR is defined on amplitudes: ``SNR_dB = 20 log10(S / sigma)`` with ``S``
    the curve's peak (``reference``, default the maximum of each curve) and
    ``sigma`` the noise standard deviation, so ``sigma = S / 10**(SNR_dB/20)``.
    """
    curves = np.asarray(curves, dtype=float)
    signal = curves.max(axis=-1) if reference is None else np.asarray(reference, dtype=float)
    sigma = np.asarray(signal) / 10 ** (np.asarray(snr_db, dtype=float) / 20)
    return curves + rng.standard_normal(curves.shape) * np.asarray(sigma)[..., None]
