"""Simulated CT perfusion curves (Zeng et al. 2025, section 2.3, eqs. 3-7).

Two levels:

* building blocks, each vectorised over a batch (leading axes broadcast, time
  last): global AIFs :func:`gamma_variate_aif` (eq. 3) and :func:`parker_aif`
  (eq. 4) in HU above baseline; the residue function of a gamma transit-time
  distribution :func:`residue_function` (eq. 5), ``r(0) = 1``; delay and
  dispersion of the global AIF into the local AIF, :func:`delay_curves` and
  :func:`disperse` (eq. 6, exponential vascular transport function); the tissue
  curve ``C = Ca_local (x) K`` with ``K = (rho / kappa_H) * CBF / 6000 * r``
  (:func:`tissue_curves`, eq. 7 with the constants of the conventions);
  :func:`sample_curves` and :func:`add_noise`.
* the batch simulator :func:`simulate_curves`, which draws the parameters of
  many curves from :class:`SimulationRanges` (the paper's training ranges are
  :data:`TRAINING_RANGES`), or takes them as given, and returns a
  :class:`SimulatedCurves` on one shared frame grid.

Curves are computed on a fine grid (``FINE_DT`` = 0.05 s for the building
blocks, ``BATCH_FINE_DT`` = 0.1 s for the batch simulator) and then sampled at
the frame times, so that the discretisation error of the simulator is far
below the one of the methods under test (the frame interval is 1-2 s).

Signal-to-noise ratio
---------------------
One definition, used everywhere (:func:`add_noise`): SNR is a ratio of
amplitudes, ``SNR_dB = 20 log10(S / sigma)``, where ``S`` is the peak of the
noise-free curve (each curve its own) and ``sigma`` the standard deviation of
the zero-mean Gaussian noise added to every frame. 20 dB means
``sigma = S / 10``; 1 dB ``sigma = 0.89 S``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace

import numpy as np
import scipy.fft
from scipy.special import gammainc, gammaln

from ..perfusion.constants import CBF_UNIT_FACTOR, KAPPA_H, RHO

#: step of the fine simulation grid of the building blocks, in seconds
FINE_DT = 0.05
#: step of the fine grid of :func:`simulate_curves`, in seconds (the issue's bound: <= 0.1 s)
BATCH_FINE_DT = 0.1

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

#: The AIF shapes of the simulator, in the order of their integer codes.
AIF_TYPES = ("gamma", "parker")
#: Gamma-variate AIF of Wu et al. (2003) / Ostergaard et al. (1996): exponent 3, time constant 1.5 s.
GAMMA_AIF_SHAPE = {"alpha": 3.0, "beta": 1.5}
#: Peak of an unscaled simulated AIF in HU above baseline (a typical CT arterial peak);
#: the value scale factor multiplies it.
AIF_PEAK_HU = 300.0
#: Lattice on which random AIF time scales are drawn (curves on the same lattice point share spectra).
AIF_TIME_SCALE_STEP = 1e-3
#: Lattice on which random T_A values are drawn, in seconds.
T_A_STEP = 1e-2
#: Fine steps whose residue mass is computed exactly (gammainc) when alpha < 2.
_EXACT_STEPS = 20
#: FFT samples per block of curves in :func:`simulate_curves` (chunk size times FFT length)
CHUNK_FFT_SAMPLES = 800_000
#: elements below which a torch CPU kernel runs on the calling thread (ATen's GRAIN_SIZE)
_TORCH_GRAIN = 32_768


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


def parker_aif(t, t0=0.0, peak=400.0, params=None, time_scale=1.0):
    """Parker et al. (2006) population AIF (eq. 4), scaled to ``peak`` HU.

    Two Gaussians (first pass and recirculation) plus a sigmoid-modulated
    exponential (wash-out). ``t`` in seconds; the published curve's time
    origin (injection) is shifted by ``t0`` seconds, stretched by
    ``time_scale`` (the curve at ``t`` is the published one at
    ``(t - t0) / time_scale``), and the curve is scaled so that its maximum is
    ``peak`` HU above baseline.

    >>> t = np.arange(0, 80.0)
    >>> c = parker_aif(t, peak=350)
    >>> round(float(c.max()), 6), int(t[c.argmax()])
    (350.0, 10)
    >>> int(t[parker_aif(t, peak=1, time_scale=1.3).argmax()])
    13
    """
    p = dict(PARKER_2006, **(params or {}))
    t = np.asarray(t, dtype=float)
    t0c, peakc, scalec = _col(t0), _col(peak), _col(time_scale)
    minutes = (t - t0c) / scalec / 60.0
    curve = (
        p["A1"] / (p["sigma1"] * np.sqrt(2 * np.pi)) * np.exp(-((minutes - p["T1"]) ** 2) / (2 * p["sigma1"] ** 2))
        + p["A2"] / (p["sigma2"] * np.sqrt(2 * np.pi)) * np.exp(-((minutes - p["T2"]) ** 2) / (2 * p["sigma2"] ** 2))
        + p["alpha"] * np.exp(-p["beta"] * minutes) / (1 + np.exp(-p["s"] * (minutes - p["tau"])))
    )
    curve = np.where(minutes >= 0, curve, 0.0)
    return _squeeze(peakc * curve / curve.max(axis=-1, keepdims=True), t0c, peakc, scalec)


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


def gamma_recirculation_aif(t, t0=8.0, peak=400.0, time_scale=1.0, recirculation_delay=14.0,
                            recirculation_fraction=0.3, recirculation_width=2.5):
    """A gamma-variate first pass followed by a delayed, wider recirculation bump, in HU.

    The first pass is :func:`gamma_variate_aif` with the simulator's shape (:data:`GAMMA_AIF_SHAPE`,
    its time constant stretched by ``time_scale``); the recirculation is the same gamma variate with
    ``recirculation_width`` times its time constant, starting ``recirculation_delay * time_scale``
    seconds after ``t0`` and peaking at ``recirculation_fraction`` of the first pass. The sum is
    scaled so that its maximum is ``peak``. Neither the training draws nor the paper's test sets
    use this family (it is held out for :mod:`ctp_nipype.sims.generalisation`).

    Parameters are scalars or arrays of shape ``(n,)``.

    >>> t = np.arange(0, 60.0, 0.5)
    >>> c = gamma_recirculation_aif(t, t0=5.0, peak=300.0)
    >>> round(float(c.max()), 6), float(t[c.argmax()]), bool(c[t > 30].max() > 0.1 * c.max())
    (300.0, 9.5, True)
    """
    t = np.asarray(t, dtype=float)
    t0c, scale = _col(t0), _col(time_scale)
    alpha, beta = GAMMA_AIF_SHAPE["alpha"], GAMMA_AIF_SHAPE["beta"]
    first = _unit_gamma(t - t0c, alpha, beta * scale)
    second = _unit_gamma(t - t0c - _col(recirculation_delay) * scale, alpha,
                         beta * scale * _col(recirculation_width))
    curve = first + _col(recirculation_fraction) * second
    return _squeeze(_col(peak) * curve / curve.max(axis=-1, keepdims=True), t0, peak, time_scale)


def two_injection_aif(t, t0=8.0, peak=400.0, time_scale=1.0, second_delay=10.0, second_fraction=0.6):
    """Two gamma-variate boluses (a split or repeated injection), the second ``second_delay * time_scale``
    seconds after the first and ``second_fraction`` of its height, scaled to a maximum of ``peak`` HU.

    Held out of the training draws and the paper's test sets, like :func:`gamma_recirculation_aif`.

    >>> t = np.arange(0, 60.0, 0.5)
    >>> c = two_injection_aif(t, t0=5.0, peak=300.0)
    >>> round(float(c.max()), 6), float(t[c.argmax()])
    (300.0, 9.5)
    """
    t = np.asarray(t, dtype=float)
    t0c, scale = _col(t0), _col(time_scale)
    alpha, beta = GAMMA_AIF_SHAPE["alpha"], GAMMA_AIF_SHAPE["beta"]
    curve = _unit_gamma(t - t0c, alpha, beta * scale) + _col(second_fraction) * _unit_gamma(
        t - t0c - _col(second_delay) * scale, alpha, beta * scale)
    return _squeeze(_col(peak) * curve / curve.max(axis=-1, keepdims=True), t0, peak, time_scale)


def _unit_gamma(x, alpha, beta):
    """``(x / (alpha beta))^alpha exp(alpha - x / beta)`` for ``x > 0`` (peak 1 at ``alpha beta``), else 0."""
    x = np.asarray(x, dtype=float)
    positive = x > 0
    safe = np.where(positive, x, 1.0)
    with np.errstate(over="ignore", under="ignore"):
        return np.where(positive, np.exp(alpha * np.log(safe / (alpha * beta)) + alpha - safe / beta), 0.0)


def boxcar_exponential_residue(t, mtt, plateau_fraction=0.5):
    """A box-car residue with an exponential tail: ``r = 1`` up to ``p = plateau_fraction * mtt``, then
    ``exp(-(t - p) / (mtt - p))``; its area (the MTT) is ``mtt``. Not a member of the gamma family of
    :func:`residue_function` (a plug-flow passage followed by wash-out), for the generalisation suite.

    >>> r = boxcar_exponential_residue(np.arange(0, 200.0, 0.01), mtt=6.0)
    >>> float(r[0]), round(float(r.sum() * 0.01), 2)
    (1.0, 6.0)
    """
    t = np.clip(np.asarray(t, dtype=float), 0.0, None)
    mtt, fraction = _col(mtt), _col(plateau_fraction)
    plateau = fraction * mtt
    tail = np.maximum(mtt - plateau, 1e-9)
    return _squeeze(np.where(t <= plateau, 1.0, np.exp(-(t - plateau) / tail)), mtt, plateau_fraction)


def two_compartment_residue(t, mtt, fast_fraction=0.7, fast_share_of_mtt=1.0 / 3.0):
    """A bi-exponential residue ``w exp(-t / tau1) + (1 - w) exp(-t / tau2)`` (two exchanging compartments:
    a fast vascular and a slow extravascular one), ``w = fast_fraction``, ``tau1 = fast_share_of_mtt * mtt``
    and ``tau2`` set so that the area (the MTT) is ``mtt``. Not a gamma-family residue.

    >>> r = two_compartment_residue(np.arange(0, 400.0, 0.01), mtt=6.0)
    >>> float(r[0]), round(float(r.sum() * 0.01), 2)
    (1.0, 6.0)
    """
    t = np.clip(np.asarray(t, dtype=float), 0.0, None)
    mtt, w, share = _col(mtt), _col(fast_fraction), _col(fast_share_of_mtt)
    tau1 = share * mtt
    tau2 = (mtt - w * tau1) / (1.0 - w)
    return _squeeze(w * np.exp(-t / tau1) + (1.0 - w) * np.exp(-t / tau2), mtt, fast_fraction, fast_share_of_mtt)


def residue_on_grid(mtt, alpha, fine_dt, n_samples, dtype=np.float32, out=None):
    """Fast residue functions ``r(k * fine_dt)``, ``k = 0 .. n_samples - 1``, one row per curve.

    The same function as :func:`residue_function`, computed for a uniform grid
    with few incomplete gamma evaluations: ``r = 1 - cumulative mass of h``,
    the mass of the first step exact (``gammainc``), also of the first 20 steps
    when ``alpha < 2`` (a density that is singular or steep at 0), the others
    by the midpoint rule, rescaled so that ``r`` at the last sample is exact.
    ``alpha == 1`` rows are plain exponentials. Agrees with
    :func:`residue_function` to about 1e-4 at ``fine_dt = 0.1`` s.

    Parameters
    ----------
    mtt, alpha : array_like, shape (n,)
        Mean transit time in seconds and the gamma shape, one per curve.
    fine_dt : float
        Grid step in seconds.
    n_samples : int
        Samples per curve.
    out : ndarray, shape (n, n_samples), optional
        Where to write the result (for example the first columns of a
        zero-padded FFT buffer); its dtype sets ``dtype``.

    Returns
    -------
    ndarray, shape (n, n_samples)

    Examples
    --------
    >>> r = residue_on_grid([4.0, 4.0], [1.0, 100.0], 0.1, 81)
    >>> np.round(r[:, [0, 40, 80]], 3)
    array([[1.   , 0.368, 0.135],
           [1.   , 0.487, 0.   ]], dtype=float32)
    """
    mtt = np.atleast_1d(np.asarray(mtt, dtype=float))
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), mtt.shape)
    if out is None:
        out = np.empty((mtt.size, int(n_samples)), dtype=dtype)
    elif out.shape != (mtt.size, int(n_samples)):
        raise ValueError(f"out has shape {out.shape}, expected {(mtt.size, int(n_samples))}.")
    dtype = out.dtype
    time = np.arange(n_samples) * fine_dt
    exponential = alpha == 1.0
    if exponential.any():
        out[exponential] = np.exp(-time[None, :] / mtt[exponential, None])
    general = np.flatnonzero(~exponential)
    if general.size and n_samples > 1:
        a = alpha[general]
        beta = mtt[general] / a
        # mass of h in each step [k h, (k + 1) h]: midpoint rule ...
        midpoint = ((np.arange(n_samples - 1) + 0.5) * fine_dt).astype(dtype)
        mass = (a - 1)[:, None].astype(dtype) * np.log(midpoint)[None, :]
        mass -= midpoint[None, :] / beta[:, None].astype(dtype)
        mass -= (gammaln(a) + a * np.log(beta) - np.log(fine_dt))[:, None].astype(dtype)
        np.exp(mass, out=mass)
        # ... rescaled so that the CDF at the last sample is exact (gammainc): with the cumulative
        # sum S of the midpoint masses of steps 1.., r(k) = 1 - first - factor S(k - 1), k >= 2 ...
        first = gammainc(a, fine_dt / beta)
        target = gammainc(a, (n_samples - 1) * fine_dt / beta) - first
        block = out if general.size == mtt.size else np.empty((general.size, int(n_samples)), dtype)
        block[:, 0] = 1.0
        block[:, 1] = (1.0 - first).astype(dtype)
        if n_samples > 2:
            tail = block[:, 2:]
            _cumsum_rows(mass[:, 1:], out=tail)
            total = tail[:, -1].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(total > 1e-12, target / total, 1.0)
            tail *= (-factor).astype(dtype)[:, None]
            tail += (1.0 - first).astype(dtype)[:, None]
        # ... with exact masses for the first _EXACT_STEPS steps of a density that is singular or
        # steep at 0 (alpha < 2), where the midpoint rule is poor (the rest rescaled to the exact total)
        steep = np.flatnonzero(a < 2.0)
        steps = min(_EXACT_STEPS, n_samples - 1)
        if steep.size and steps > 1:
            knots = np.arange(steps + 1) * fine_dt
            cdf = gammainc(a[steep, None], knots[None, :] / beta[steep, None])
            head = mass[steep]
            head[:, 0] = first[steep]
            rest = head[:, steps:].sum(axis=1, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                rescale = np.where(rest > 1e-12, (target[steep] + first[steep] - cdf[:, -1]) / rest, 1.0)
            head[:, steps:] *= rescale[:, None].astype(dtype)
            head[:, :steps] = np.diff(cdf, axis=1)
            rows = block[steep]
            rows[:, 0] = 0.0
            np.cumsum(head, axis=1, out=rows[:, 1:])
            np.subtract(1.0, rows, out=rows)
            block[steep] = rows
        np.clip(block, 0.0, 1.0, out=block)
        if block is not out:
            out[general] = block
    elif general.size:  # one sample: r(0) = 1
        out[general] = 1.0
    return out


def _cumsum_rows(values, out):
    """Cumulative sums along the last axis of a float32 ``(m, K)`` array, written into ``out``.

    torch's kernel, 3.2 times faster than numpy's sequential ``cumsum`` here
    (0.40 against 1.26 ms for 317 x 1215 on one thread, best of 200) and
    about 30 times more accurate in float32 (largest error relative to a
    float64 sum 5e-8 against 1.4e-6).
    """
    import torch

    # blocks of rows small enough that torch runs each on the calling thread (its intra-op pool
    # would oversubscribe the cores next to the simulator's own worker threads); with 2 torch
    # threads, CPU time / wall time was 1.00 for 26 x 1215 and 1.96 for 317 x 1215
    rows = max(1, _TORCH_GRAIN // max(values.shape[-1], 1))
    for start in range(0, values.shape[0], rows):
        torch.cumsum(torch.from_numpy(values[start:start + rows]), dim=-1,
                     out=torch.from_numpy(out[start:start + rows]))
    return out


def delay_curves(curves, dt, delay):
    """Shift curves later by ``delay`` seconds (linear interpolation, zero-filled).

    ``curves`` has time last; ``delay`` is a scalar or one value per curve (one
    curve with several delays gives one row per delay).

    >>> delay_curves([0.0, 1.0, 2.0, 3.0], 1.0, [0.0, 1.5])
    array([[0. , 1. , 2. , 3. ],
           [0. , 0. , 0.5, 1.5]])
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    n = curves.shape[-1]
    t = np.arange(n) * dt
    source = t - _col(delay)  # where each output sample comes from
    position = source / dt
    curves = np.broadcast_to(curves, np.broadcast_shapes(curves.shape, position.shape))
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


def vtf_kernel(t_a, dt, n):
    """Discrete exponential vascular transport function ``exp(-t/T_A) / T_A`` (eq. 6).

    Weight ``k`` is the kernel's mass on the cell ``[(k - 1/2) dt, (k + 1/2) dt]``
    (the first cell ``[0, dt/2]``), normalised to sum to one so that dispersion
    preserves the area of a curve exactly. Its mean is
    ``dt / (2 sinh(dt / (2 T_A)))``: ``T_A`` to a relative ``(dt / T_A)**2 / 24``
    and never off by more than ``0.12 dt`` when ``T_A`` is below the step
    (trapezoidal weights ``dt * VTF(k dt)`` were off by ``(dt / T_A)**2 / 6``,
    and by a third of ``T_A = 0.6 dt``). ``t_a = 0`` gives the identity kernel
    ``[1, 0, 0, ...]``.

    Parameters
    ----------
    t_a : array_like, shape (m,) or scalar
        Mean arterial transit time in seconds, ``>= 0``.
    dt : float
        Grid step in seconds.
    n : int
        Kernel length.

    Returns
    -------
    ndarray, shape (m, n)

    Examples
    --------
    >>> k = vtf_kernel([0.0, 2.0], 0.1, 400)
    >>> k[0, :2], round(float(k[1].sum()), 6)
    (array([1., 0.]), 1.0)
    """
    t_a = np.atleast_1d(np.asarray(t_a, dtype=float))
    if np.any(t_a < 0) or not np.all(np.isfinite(t_a)):
        raise ValueError(f"T_A must be finite and >= 0 s, got values down to {t_a.min()}.")
    time = np.arange(n) * dt
    dispersed = t_a > 0
    safe = np.where(dispersed, t_a, 1.0)[:, None]
    # T_A far below dt: the kernel is the identity (time / T_A overflows to inf and exp(-inf) is 0, as meant)
    with np.errstate(over="ignore"):
        lower = np.exp(-np.maximum(time - 0.5 * dt, 0.0)[None, :] / safe)
        kernel = lower - np.exp(-(time + 0.5 * dt)[None, :] / safe)
    kernel /= kernel.sum(axis=1, keepdims=True)
    kernel[~dispersed] = 0.0
    kernel[~dispersed, 0] = 1.0
    return kernel


def disperse(curves, dt, t_a):
    """Convolve curves with the exponential vascular transport function ``exp(-t/T_A) / T_A`` (eq. 6).

    ``t_a`` in seconds, scalar or one per curve; ``t_a = 0`` leaves a curve
    unchanged. The kernel (:func:`vtf_kernel`) is normalised, so the area of
    the curve is preserved (up to what leaves the time window).
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    n = curves.shape[-1]
    t_a = np.broadcast_to(np.asarray(t_a, dtype=float), curves.shape[:-1])
    kernel = vtf_kernel(t_a.ravel(), dt, n).reshape(t_a.shape + (n,))
    length = scipy.fft.next_fast_len(2 * n, real=True)
    return scipy.fft.irfft(scipy.fft.rfft(curves, length) * scipy.fft.rfft(kernel, length), length)[..., :n]


def flow_scaled_residue(residue, cbf, kappa_h=KAPPA_H, rho=RHO):
    """``K = (rho / kappa_H) * CBF / 6000 * r`` in 1/s, CBF in ml/100 g/min."""
    return (rho / kappa_h) * _col(cbf) / CBF_UNIT_FACTOR * residue


def tissue_curves(local_aif, flow_residue, dt):
    """``C = Ca_local (x) K`` on a fine grid, trapezoidal rule (:func:`~.convolution.convolve`)."""
    from ..perfusion.convolution import convolve

    return convolve(local_aif, flow_residue, dt)


def sample_curves(curves, fine_dt, frame_times, fill_before=None, rows=None):
    """Sample fine-grid curves (starting at t = 0) at the given times (linear interpolation).

    ``frame_times`` is shared, shape ``(T,)``, or one row per curve, shape
    ``(n, T)`` for ``curves`` of shape ``(n, L)``. Times before 0 take the
    first sample, or ``fill_before`` when given (0 for a curve that starts at
    its onset); times past the end take the last sample. With ``rows``
    (shape ``(n,)``), ``curves`` is a table and output row ``i`` samples
    ``curves[rows[i]]`` (without copying the table rows).

    >>> sample_curves(np.array([[0.0, 1.0, 2.0]]), 0.5, np.array([[-1.0, 0.25, 9.0]]), fill_before=0.0)
    array([[0. , 0.5, 2. ]])
    """
    curves = np.asarray(curves)
    times = np.asarray(frame_times, dtype=float)
    if times.ndim == 1 and rows is None:
        left, weight = _interpolation_weights(times / fine_dt, curves.shape[-1])
        values = curves[..., left] * (1 - weight) + curves[..., left + 1] * weight
        return values if fill_before is None else np.where(times < 0, fill_before, values)
    return _sample_rows(curves, _row_interpolation(times / fine_dt, curves.shape[-1], rows), fill_before)


def _interpolation_weights(position, n_samples):
    """Left neighbour and weight of the right one for fractional sample positions."""
    position = np.asarray(position)
    floor = np.floor(position)
    np.clip(floor, 0, n_samples - 2, out=floor)
    weight = position - floor  # in the positions' float type
    np.clip(weight, 0, 1, out=weight)
    return floor.astype(np.intp), weight


def _row_interpolation(position, n_samples, rows=None, row_stride=None):
    """Flat gather indices and weights for per-row positions ``(n, T)``.

    The curves are a C-contiguous ``(m, row_stride)`` array of which the first
    ``n_samples`` of each row are used (``row_stride`` defaults to ``n_samples``).
    """
    left, weight = _interpolation_weights(position, n_samples)
    row = np.arange(position.shape[0]) if rows is None else np.asarray(rows)
    left += (row * (n_samples if row_stride is None else row_stride))[:, None]
    return left, weight.astype(position.dtype, copy=False), position < 0


def _sample_rows(curves, interpolation, fill_before=None):
    """Linear interpolation with precomputed :func:`_row_interpolation` (one pair of gathers)."""
    left, weight, before = interpolation
    flat = np.ascontiguousarray(curves).reshape(-1)
    values = np.take(flat, left)
    values += (np.take(flat, left + 1) - values) * weight
    if fill_before is not None:
        values[before] = fill_before
    return values


def noise_sigma(signal, snr_db):
    """Noise standard deviation for a signal amplitude and an SNR in dB: ``signal / 10**(SNR_dB / 20)``.

    >>> float(noise_sigma(100.0, 20.0))
    10.0
    """
    return np.asarray(signal, dtype=float) / 10 ** (np.asarray(snr_db, dtype=float) / 20)


def add_noise(curves, snr_db, rng, reference=None):
    """Add zero-mean Gaussian noise at a given SNR in dB.

    SNR is defined on amplitudes: ``SNR_dB = 20 log10(S / sigma)`` with ``S``
    the curve's peak (``reference``, default the maximum of each curve) and
    ``sigma`` the noise standard deviation, so ``sigma = S / 10**(SNR_dB/20)``.
    ``snr_db = inf`` adds nothing.
    """
    curves = np.asarray(curves)
    sigma = noise_sigma(curves.max(axis=-1) if reference is None else reference, snr_db)
    noisy = rng.standard_normal(curves.shape)  # one float64 array, worked on in place
    noisy *= sigma[..., None]
    noisy += curves
    return noisy


# ----------------------------------------------------------------------------- the batch simulator


@dataclass(frozen=True)
class SimulationRanges:
    """Where :func:`simulate_curves` draws each parameter from (uniformly, bounds included).

    Attributes
    ----------
    snr_db : (float, float)
        Tissue SNR in dB (module docstring: peak over noise sigma, amplitudes).
    cbf : (float, float)
        ml/100 g/min.
    mtt : (float, float)
        s.
    alpha : (float, float)
        Shape of the gamma transit-time distribution (1 exponential, 100 box-car).
    t_a : (float, float)
        Mean arterial transit time of the dispersion kernel, s; drawn on a
        lattice of ``T_A_STEP``.
    t_a_zero_fraction : float
        Share of curves without dispersion (``T_A = 0``).
    alpha_one_fraction : float
        Share of curves with an exponential residue (``alpha = 1``, the shape
        of every test set but half of set 6), which a uniform draw over
        ``alpha`` gives to almost none. Default 0: no extra draw is made, so
        the random stream (and every existing simulation) is unchanged.
    low_alpha_fraction : float
        Share of curves (apart from the ``alpha_one_fraction``) whose shape is
        drawn log-uniformly over ``low_alpha`` instead: the peaked residues of
        grey matter (the phantom's alpha = 3), which the uniform draw over
        (0.5, 100) gives 3% of the curves between 2 and 5. Default 0: no
        extra draw.
    low_alpha : (float, float)
        Range of that log-uniform draw (both bounds > 0).
    mixture_fraction : float
        Share of curves that are partial-volume mixtures of two tissues
        (:func:`mix_compartments`): a second residue (its own CBF, MTT and
        alpha, drawn uniformly from these ranges) behind the same local AIF,
        weighted ``1 - w``. Default 0: no mixture and no extra draw.
    mixture_weight : (float, float)
        Range of the first tissue's weight ``w`` (uniform).
    delay : (float, float)
        Bolus arrival delay of the tissue relative to the global AIF, s.
    frame_interval : (float, float)
        s, one value per call.
    n_frames : (int, int)
        Frames per curve, one value per call.
    aif_types : tuple of str
        Drawn with equal probability, from :data:`AIF_TYPES`.
    aif_time_scale, aif_value_scale : (float, float)
        Independent stretch factors of the AIF's time and value axes; the time
        scale is drawn on a lattice of ``AIF_TIME_SCALE_STEP``.
    aif_onset : (float, float)
        Time of the AIF's origin (start of the gamma variate, injection time of
        Parker's curve), s: the pre-bolus baseline.
    """

    snr_db: tuple = (1.0, 30.0)
    cbf: tuple = (0.0, 200.0)
    mtt: tuple = (3.43, 24.0)
    alpha: tuple = (0.5, 100.0)
    t_a: tuple = (1.0, 4.0)
    t_a_zero_fraction: float = 0.2
    alpha_one_fraction: float = 0.0
    low_alpha_fraction: float = 0.0
    low_alpha: tuple = (1.0, 10.0)
    mixture_fraction: float = 0.0
    mixture_weight: tuple = (0.5, 0.95)
    delay: tuple = (0.0, 25.0)
    frame_interval: tuple = (1.0, 2.0)
    n_frames: tuple = (45, 120)
    aif_types: tuple = AIF_TYPES
    aif_time_scale: tuple = (0.7, 1.3)
    aif_value_scale: tuple = (0.7, 1.3)
    aif_onset: tuple = (3.0, 8.0)

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "aif_types":
                unknown = set(value) - set(AIF_TYPES)
                if not value or unknown:
                    raise ValueError(f"aif_types must be a non-empty subset of {AIF_TYPES}, got {value}.")
            elif item.name in ("t_a_zero_fraction", "alpha_one_fraction", "low_alpha_fraction", "mixture_fraction"):
                if not 0 <= value <= 1:
                    raise ValueError(f"{item.name} must lie in [0, 1], got {value}.")
            elif len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"The range {item.name} must be (low, high) with low <= high, got {value}.")
        minimum = {"snr_db": -np.inf, "cbf": 0, "mtt": 1e-9, "alpha": 1e-9, "t_a": 0, "delay": 0,
                   "frame_interval": 1e-9, "n_frames": 3, "aif_time_scale": 1e-9, "aif_value_scale": 1e-9,
                   "aif_onset": 0}
        for name, low in minimum.items():
            if getattr(self, name)[0] < low:
                raise ValueError(f"The range {name} starts below its physical minimum {low}: {getattr(self, name)}.")
        if not (0 <= self.mixture_weight[0] and self.mixture_weight[1] <= 1):
            raise ValueError(f"mixture_weight must lie within [0, 1], got {self.mixture_weight}.")
        if self.alpha_one_fraction + self.low_alpha_fraction > 1:
            raise ValueError(
                f"alpha_one_fraction + low_alpha_fraction must be at most 1, got "
                f"{self.alpha_one_fraction} + {self.low_alpha_fraction}."
            )
        if self.low_alpha[0] <= 0:
            raise ValueError(f"low_alpha is drawn log-uniformly, so it must start above 0, got {self.low_alpha}.")


#: The paper's training ranges (section 2.3), plus a 20% share without dispersion.
TRAINING_RANGES = SimulationRanges()


@dataclass
class SimulatedCurves:
    """A batch of simulated curves on one frame grid, with their truth.

    Curves are float32 arrays of shape ``(n, T)`` in HU above baseline (the
    concentration of the conventions); per-curve truths are arrays of shape
    ``(n,)``.

    Attributes
    ----------
    frame_times : ndarray, shape (T,)
        Uniform frame times in seconds, starting at 0.
    global_aif : ndarray
        The global AIF, HU. Noise-free unless ``aif_snr_db`` was given to
        :func:`simulate_curves`.
    local_aif : ndarray
        Truth: the global AIF delayed by ``delay`` and dispersed with ``t_a``, HU.
    tissue : ndarray
        Noisy tissue concentration, HU.
    tissue_clean : ndarray
        Noise-free tissue concentration, HU.
    residue : ndarray
        Truth: flow-scaled residue ``K`` in 1/s at the frame offsets ``frame_times - frame_times[0]``.
    cbf, cbv, mtt : ndarray
        ml/100 g/min, ml/100 g, s; ``cbv = cbf * mtt / 60``.
    alpha : ndarray
        Shape of the transit-time distribution.
    delay : ndarray
        Bolus arrival delay (BAD) relative to the global AIF, s.
    t_a : ndarray
        Dispersion mean arterial transit time, s (0: none).
    snr_db : ndarray
        Tissue SNR in dB (inf: noise-free).
    noise_sigma : ndarray
        Standard deviation of the tissue noise, HU.
    aif_type : ndarray of str
        ``'gamma'`` or ``'parker'``.
    aif_time_scale, aif_value_scale, aif_onset : ndarray
        The AIF's stretch factors and origin time (s).
    """

    frame_times: np.ndarray
    global_aif: np.ndarray
    local_aif: np.ndarray
    tissue: np.ndarray
    tissue_clean: np.ndarray
    residue: np.ndarray
    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    alpha: np.ndarray
    delay: np.ndarray
    t_a: np.ndarray
    snr_db: np.ndarray
    noise_sigma: np.ndarray
    aif_type: np.ndarray
    aif_time_scale: np.ndarray
    aif_value_scale: np.ndarray
    aif_onset: np.ndarray

    @property
    def n_curves(self):
        return int(self.tissue.shape[0])

    @property
    def n_frames(self):
        return int(self.frame_times.size)

    @property
    def frame_interval(self):
        """Frame interval in seconds."""
        return float(self.frame_times[1] - self.frame_times[0])

    def select(self, index):
        """The curves picked by ``index`` (boolean mask or integer indices), same grid."""
        return replace(
            self,
            **{f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "frame_times"},
        )


def _draw(rng, value, low_high, n, name, minimum=None, step=None):
    """A given value (scalar or (n,)) checked, or n uniform draws from ``low_high``."""
    if value is None:
        low, high = (float(v) for v in low_high)
        if step is None:
            return rng.uniform(low, high, n)
        count = int(np.floor((high - low) / step + 1e-9))
        return low + step * rng.integers(0, count + 1, n)
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or (array.ndim == 1 and array.size != n):
        raise ValueError(f"{name} must be a scalar or have one value per curve ({n}), got shape {array.shape}.")
    array = np.broadcast_to(array, (n,)).copy()
    if np.any(np.isnan(array)) or (name != "snr_db" and not np.all(np.isfinite(array))):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if minimum is not None and np.any(array < minimum):
        raise ValueError(f"{name} must be >= {minimum}, got values down to {array.min()}.")
    return array


def _unit_aifs(types, time_scales, fine_dt, n_samples):
    """Unit-peak global AIFs with origin at t = 0 on the fine grid, one row per (type, scale)."""
    time = np.arange(n_samples) * fine_dt
    out = np.empty((types.size, n_samples))
    gamma = types == AIF_TYPES.index("gamma")
    if gamma.any():
        scale = time_scales[gamma]
        out[gamma] = gamma_variate_aif(
            time, t0=np.zeros(scale.size), alpha=np.full(scale.size, GAMMA_AIF_SHAPE["alpha"]),
            beta=GAMMA_AIF_SHAPE["beta"] * scale, peak=np.ones(scale.size),
        ).reshape(scale.size, n_samples)
    if (~gamma).any():
        scale = time_scales[~gamma]
        out[~gamma] = parker_aif(time, t0=np.zeros(scale.size), peak=np.ones(scale.size),
                                 time_scale=scale).reshape(scale.size, n_samples)
    return out


def _chunk_curves(chunk, shared):
    """The fine-grid work for one chunk of curves; returns unit-amplitude curves at the frames.

    Undispersed local AIFs are the unit AIFs themselves (sampled later), so
    only dispersed curves pay for the inverse FFT of their local AIF. The
    local AIF, the tissue curve and the residue are read at the same fine-grid
    positions, so the interpolation weights are computed once.
    """
    fine_dt, n_fine, length = shared["fine_dt"], shared["n_fine"], shared["length"]
    unit_aifs, rows = shared["unit_aifs"], shared["aif_row"][chunk]
    frame_times, onset = shared["frame_times"][None, :], shared["onset"][chunk, None]
    # the frames' fine-grid positions on the clock of the local AIF (origin at onset + delay)
    position = (frame_times - (onset + shared["delay"][chunk, None])).astype(np.float32) / np.float32(fine_dt)
    left, weight = _interpolation_weights(position, n_fine)  # weight in float32, as position
    before = position < 0
    n = position.shape[0]
    spectrum = shared["aif_spectra"][rows]
    local = _sample_rows(unit_aifs, (left + (rows * n_fine)[:, None], weight, before), 0.0)
    # the global AIF: the same unit AIF read from its onset
    global_position = (frame_times - onset).astype(np.float32) / np.float32(fine_dt)
    global_aif = _sample_rows(unit_aifs, _row_interpolation(global_position, n_fine, rows=rows), 0.0)
    local_start = unit_aifs[rows, 0]
    dispersed = np.flatnonzero(shared["t_a"][chunk] > 0)
    if dispersed.size:
        local_spectrum = spectrum[dispersed]
        local_spectrum *= shared["vtf_spectra"][shared["vtf_row"][chunk][dispersed]]
        spectrum[dispersed] = local_spectrum
        local_fine = scipy.fft.irfft(local_spectrum, length, axis=-1, workers=1, overwrite_x=True)
        rows_of_local = (np.arange(dispersed.size) * length)[:, None]
        local[dispersed] = _sample_rows(
            local_fine, (left[dispersed] + rows_of_local, weight[dispersed], before[dispersed]), 0.0)
        local_start[dispersed] = local_fine[:, 0]
    # the residues, written into a zero-padded buffer of the FFT's length (no padding copy)
    padded = np.empty((n, length), np.float32)
    padded[:, n_fine:] = 0.0
    residue_fine = residue_on_grid(shared["mtt"][chunk], shared["alpha"][chunk], fine_dt, n_fine,
                                   out=padded[:, :n_fine])
    spectrum *= scipy.fft.rfft(padded, axis=-1, workers=1)
    tissue_fine = scipy.fft.irfft(spectrum, length, axis=-1, workers=1, overwrite_x=True)
    # tissue_fine and padded are both (n, length): one gather index for both
    at_frames = (left + (np.arange(n) * length)[:, None], weight, before)
    tissue = _sample_rows(tissue_fine, at_frames, 0.0)
    # trapezoidal rule: remove half of the end-point terms of the rectangle sum (r(0) = 1)
    residue_at = _sample_rows(padded, at_frames, 0.0)
    residue_at *= local_start[:, None]
    residue_at += local
    residue_at *= 0.5
    tissue -= residue_at
    tissue *= np.float32(fine_dt)
    residue = sample_curves(residue_fine, fine_dt, shared["frame_times"])
    # the physical scales, per curve
    amplitude = shared["amplitude"][chunk]
    global_aif *= amplitude
    local *= amplitude
    tissue *= amplitude * shared["flow"][chunk]
    residue *= shared["flow"][chunk]
    return global_aif, local, tissue, residue


def simulate_curves(
    n_curves,
    rng,
    ranges=TRAINING_RANGES,
    frame_interval=None,
    n_frames=None,
    *,
    cbf=None,
    mtt=None,
    alpha=None,
    delay=None,
    t_a=None,
    snr_db=None,
    aif_type=None,
    aif_time_scale=None,
    aif_value_scale=None,
    aif_onset=None,
    aif_snr_db=None,
    fine_dt=BATCH_FINE_DT,
    kappa_h=KAPPA_H,
    rho=RHO,
    chunk_size=None,
    workers=1,
):
    """Simulate ``n_curves`` tissue curves with their global and local AIFs on one frame grid.

    Every curve has its own global AIF (gamma variate or Parker, stretched in
    time and value), delay, dispersion, residue function and noise; all
    share the frame times ``0, dt, ..., (n_frames - 1) dt``. The model is eq. 7
    of the paper with the constants of the conventions::

        Ca_local(t) = (Ca(t - delay) (x) VTF_{T_A})(t)
        K(t)        = (rho / kappa_H) * CBF / 6000 * r(t; MTT, alpha)        [1/s]
        C(t)        = (Ca_local (x) K)(t) + noise                            [HU]

    so that ``CBV = CBF * MTT / 60`` and ``integral(C) / integral(Ca) = (kappa_H / rho) * CBV / 100``
    when the window holds the whole passage. The curves are computed on a
    fine grid of ``fine_dt`` seconds (FFT convolutions, trapezoidal rule) and
    sampled at the frame times; noise follows the SNR definition of the module
    docstring (peak of each noise-free tissue curve over the noise sigma).

    Parameters
    ----------
    n_curves : int
    rng : numpy.random.Generator or int
        Source of all randomness; the same seed gives the same curves,
        whatever ``chunk_size`` and ``workers``.
    ranges : SimulationRanges
        Where parameters that are not given are drawn from.
    frame_interval : float, optional
        s; drawn from ``ranges.frame_interval`` when not given.
    n_frames : int, optional
        Drawn from ``ranges.n_frames`` when not given.
    cbf, mtt, alpha, delay, t_a, snr_db, aif_time_scale, aif_value_scale, aif_onset : float or array_like, optional
        Fix a parameter (a scalar for all curves or one value per curve)
        instead of drawing it. ``snr_db = inf`` gives noise-free curves.
    aif_type : str or array_like of str, optional
        ``'gamma'`` or ``'parker'`` per curve.
    aif_snr_db : float, optional
        Add noise to the global AIF too (same SNR definition); default none.
    fine_dt : float
        Step of the fine grid in seconds (<= 0.1 s and below the frame interval).
    kappa_h, rho : float
        Hematocrit factor and tissue density (g/ml).
    chunk_size : int, optional
        Curves per fine-grid block (bounds the memory: about
        ``chunk_size * 4 * (duration / fine_dt) * 8`` bytes). Default: blocks of
        about ``CHUNK_FFT_SAMPLES`` FFT samples, which stay in the CPU's cache
        (494 curves at the test sets' 80 s, 167 at 240 s). Measured with 2
        workers against blocks of 256 curves, medians of interleaved runs: 62k
        against 43k curves/s at 80 s (512 curves) in one run, 47k against 46k in
        another; 36k against 32k on the mean training grid (1.5 s x 82).
    workers : int
        Threads working in parallel: on blocks of curves, on the unit AIFs and
        on the noise, while the calling thread draws the noise (2 workers on
        2 cores: 56,000-61,000 curves/s on the mean training grid, 1.5 s x
        82 frames, ``benchmarks/bench_simulate.py``, 2026-12-02).

    Returns
    -------
    SimulatedCurves

    Examples
    --------
    >>> sim = simulate_curves(3, 0, frame_interval=1.0, n_frames=60, snr_db=np.inf, aif_type="gamma")
    >>> sim.tissue.shape, sim.frame_interval
    ((3, 60), 1.0)
    >>> bool(np.allclose(sim.cbv, sim.cbf * sim.mtt / 60))
    True
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if isinstance(n_curves, bool) or int(n_curves) != n_curves or n_curves < 1:
        raise ValueError(f"n_curves must be a positive integer, got {n_curves!r}.")
    n = int(n_curves)
    if not isinstance(ranges, SimulationRanges):
        raise TypeError(f"ranges must be a SimulationRanges, got {type(ranges).__name__}.")

    if frame_interval is None:
        frame_interval = rng.uniform(*ranges.frame_interval)
    if n_frames is None:
        n_frames = int(rng.integers(ranges.n_frames[0], ranges.n_frames[1] + 1))
    frame_interval, n_frames = float(frame_interval), int(n_frames)
    if not 0 < fine_dt <= 0.1 + 1e-12:
        raise ValueError(f"fine_dt must lie in (0, 0.1] s (the fine simulation grid), got {fine_dt}.")
    if not frame_interval > fine_dt:
        raise ValueError(f"frame_interval ({frame_interval} s) must be longer than fine_dt ({fine_dt} s).")
    if n_frames < 3:
        raise ValueError(f"n_frames must be at least 3, got {n_frames}.")

    if aif_type is None:
        codes = rng.choice([AIF_TYPES.index(name) for name in ranges.aif_types], n)
    else:
        names = np.broadcast_to(np.asarray(aif_type, dtype=str), (n,))
        unknown = sorted(set(names) - set(AIF_TYPES))
        if unknown:
            raise ValueError(f"Unknown AIF type(s) {unknown}; choose from {AIF_TYPES}.")
        codes = np.argmax(names[:, None] == np.asarray(AIF_TYPES)[None, :], axis=1)
    time_scale = _draw(rng, aif_time_scale, ranges.aif_time_scale, n, "aif_time_scale", 1e-9, AIF_TIME_SCALE_STEP)
    value_scale = _draw(rng, aif_value_scale, ranges.aif_value_scale, n, "aif_value_scale", 1e-9)
    onset = _draw(rng, aif_onset, ranges.aif_onset, n, "aif_onset", 0.0)
    cbf = _draw(rng, cbf, ranges.cbf, n, "cbf", 0.0)
    mtt = _draw(rng, mtt, ranges.mtt, n, "mtt", 1e-6)
    alpha_given = alpha
    alpha = _draw(rng, alpha, ranges.alpha, n, "alpha", 1e-6)
    delay = _draw(rng, delay, ranges.delay, n, "delay", 0.0)
    if t_a is None:
        t_a = _draw(rng, None, ranges.t_a, n, "t_a", step=T_A_STEP)
        t_a[rng.random(n) < ranges.t_a_zero_fraction] = 0.0
    else:
        t_a = _draw(rng, t_a, None, n, "t_a", 0.0)
    snr = _draw(rng, snr_db, ranges.snr_db, n, "snr_db")
    if (ranges.alpha_one_fraction > 0 or ranges.low_alpha_fraction > 0) and alpha_given is None:
        # one uniform number per curve picks its share: [0, f1) exponential, [f1, f1 + f2) low alpha, so a
        # configuration without the low-alpha share draws exactly what it drew before that share existed
        share = rng.random(n)
        low = (share >= ranges.alpha_one_fraction) & (share < ranges.alpha_one_fraction + ranges.low_alpha_fraction)
        if ranges.low_alpha_fraction > 0:
            alpha[low] = np.exp(rng.uniform(*np.log(ranges.low_alpha), int(low.sum())))
        alpha[share < ranges.alpha_one_fraction] = 1.0

    frame_times = np.arange(n_frames) * frame_interval
    n_fine = int(np.ceil(frame_times[-1] / fine_dt)) + 2
    length = scipy.fft.next_fast_len(2 * n_fine, real=True)
    # curves that share an AIF (type, time scale) or a T_A share their spectra
    scales, scale_index = np.unique(time_scale, return_inverse=True)
    aif_keys, aif_row = np.unique(scale_index.ravel() * len(AIF_TYPES) + codes, return_inverse=True)
    vtf_keys, vtf_row = np.unique(t_a, return_inverse=True)
    shared = {
        "fine_dt": fine_dt,
        "n_fine": n_fine,
        "length": length,
        "vtf_spectra": scipy.fft.rfft(vtf_kernel(vtf_keys, fine_dt, n_fine).astype(np.float32), length,
                                      axis=-1).astype(np.complex64, copy=False),
        "aif_row": aif_row.ravel(),
        "vtf_row": vtf_row.ravel(),
        "mtt": mtt,
        "alpha": alpha,
        "t_a": t_a,
        "amplitude": (AIF_PEAK_HU * value_scale)[:, None].astype(np.float32),
        "flow": ((rho / kappa_h) * cbf / CBF_UNIT_FACTOR)[:, None].astype(np.float32),  # K(0) in 1/s
        "frame_times": frame_times,
        "onset": onset,
        "delay": delay,
    }
    if chunk_size is None:
        chunk_size = max(64, min(4096, round(CHUNK_FFT_SAMPLES / length)))
    chunks = [slice(start, min(start + chunk_size, n)) for start in range(0, n, int(chunk_size))]
    # global AIF, local AIF, noise-free tissue curve, flow-scaled residue; each chunk fills its rows.
    # The noise is drawn after every parameter, in one call (the stream of add_noise), and scaled
    # afterwards in row blocks: sigma = peak of the noise-free curve / 10**(SNR/20).
    results = tuple(np.empty((n, n_frames), np.float32) for _ in range(4))

    def unit_aif_block(keys):
        """Unit AIFs of some (type, scale) keys on the fine grid, and their spectra."""
        block = _unit_aifs(keys % len(AIF_TYPES), scales[keys // len(AIF_TYPES)], fine_dt, n_fine)
        block = block.astype(np.float32)
        return block, scipy.fft.rfft(block, length, axis=-1, workers=1).astype(np.complex64, copy=False)

    def fill(chunk):
        for result, part in zip(results, _chunk_curves(chunk, shared)):
            result[chunk] = part

    global_aif, local_aif, tissue_clean, residue = results
    tissue, sigma = np.empty((n, n_frames), np.float32), np.empty(n)

    def add_noise_rows(rows):
        sigma[rows] = noise_sigma(tissue_clean[rows].max(axis=1), snr[rows])
        block = normals[rows]
        block *= sigma[rows, None]
        block += tissue_clean[rows]
        tissue[rows] = block

    if workers > 1 and len(chunks) > 1:
        # the threads share every step (the unit AIFs in blocks of keys, then the chunks of curves)
        # while this thread draws the noise
        with ThreadPoolExecutor(int(workers)) as pool:
            key_blocks = np.array_split(aif_keys, min(int(workers), aif_keys.size))
            aif_parts = list(pool.map(unit_aif_block, key_blocks))
            shared["unit_aifs"] = np.concatenate([part[0] for part in aif_parts])
            shared["aif_spectra"] = np.concatenate([part[1] for part in aif_parts])
            done = [pool.submit(fill, chunk) for chunk in chunks]
            normals = rng.standard_normal((n, n_frames))
            for future in done:
                future.result()
            bounds = np.linspace(0, n, int(workers) + 1).astype(int)
            list(pool.map(add_noise_rows, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
    else:
        shared["unit_aifs"], shared["aif_spectra"] = unit_aif_block(aif_keys)
        for chunk in chunks:
            fill(chunk)
        normals = rng.standard_normal((n, n_frames))
        add_noise_rows(slice(0, n))
    if aif_snr_db is not None:
        global_aif = add_noise(global_aif, aif_snr_db, rng).astype(np.float32)
    sim = SimulatedCurves(
        frame_times=frame_times,
        global_aif=global_aif.astype(np.float32, copy=False),
        local_aif=local_aif,
        tissue=tissue,
        tissue_clean=tissue_clean,
        residue=residue.astype(np.float32, copy=False),
        cbf=cbf,
        cbv=cbf * mtt / 60.0,
        mtt=mtt,
        alpha=alpha,
        delay=delay,
        t_a=t_a,
        snr_db=snr,
        noise_sigma=sigma,
        aif_type=np.asarray(AIF_TYPES)[codes],
        aif_time_scale=time_scale,
        aif_value_scale=value_scale,
        aif_onset=onset,
    )
    if ranges.mixture_fraction > 0:
        sim = mix_compartments(sim, rng, ranges, fine_dt=fine_dt, kappa_h=kappa_h, rho=rho)
    return sim


def mix_compartments(sim, rng, ranges, **simulate_kwargs):
    """Make a share of simulated curves partial-volume mixtures of two tissues behind one local AIF.

    A voxel at a tissue boundary holds two tissues fed by the same artery: its
    curve is ``w * C1 + (1 - w) * C2`` with ``C_i = Ca_local (x) K_i``, that is
    the local AIF convolved with the mixed flow-scaled residue
    ``K = w * K1 + (1 - w) * K2``, still non-negative and non-increasing. For a
    share ``ranges.mixture_fraction`` of the curves of ``sim`` a second tissue
    is drawn (its CBF, MTT and alpha uniformly from ``ranges.cbf``, ``.mtt``
    and ``.alpha``, without the exponential or low-alpha shares; the AIF,
    delay and dispersion of the first), ``w`` uniformly from ``ranges.mixture_weight``,
    and the noise drawn again at the curve's SNR on the mixed curve's peak.
    The truths become those of the mixture: ``CBF = K(0)`` scaled (``w CBF1 +
    (1 - w) CBF2``), ``CBV = w CBV1 + (1 - w) CBV2``, ``MTT = 60 CBV / CBF``;
    ``alpha`` stays the first tissue's.

    Parameters
    ----------
    sim : SimulatedCurves
    rng : numpy.random.Generator
    ranges : SimulationRanges
    **simulate_kwargs
        ``fine_dt``, ``kappa_h``, ``rho`` of the first simulation.

    Returns
    -------
    SimulatedCurves (a new one; ``sim`` is unchanged)

    Examples
    --------
    >>> sim = simulate_curves(200, 3, replace(TRAINING_RANGES, mixture_fraction=0.5), snr_db=np.inf)
    >>> bool(np.allclose(sim.cbv, sim.cbf * sim.mtt / 60, rtol=1e-5))
    True
    """
    picked = np.flatnonzero(rng.random(sim.n_curves) < ranges.mixture_fraction)
    if picked.size == 0:
        return sim
    first = sim.select(picked)
    second = simulate_curves(
        picked.size, rng, replace(ranges, mixture_fraction=0.0, alpha_one_fraction=0.0, low_alpha_fraction=0.0),
        first.frame_interval, first.n_frames, aif_type=first.aif_type, aif_time_scale=first.aif_time_scale,
        aif_value_scale=first.aif_value_scale, aif_onset=first.aif_onset, delay=first.delay, t_a=first.t_a,
        snr_db=np.inf, **simulate_kwargs,
    )
    weight = rng.uniform(*ranges.mixture_weight, picked.size)
    w, rest = weight[:, None].astype(np.float32), (1.0 - weight)[:, None].astype(np.float32)
    clean = w * first.tissue_clean + rest * second.tissue_clean
    cbf = weight * first.cbf + (1.0 - weight) * second.cbf
    cbv = weight * first.cbv + (1.0 - weight) * second.cbv
    out = {name: np.array(getattr(sim, name), copy=True)
           for name in ("tissue", "tissue_clean", "residue", "cbf", "cbv", "mtt", "noise_sigma")}
    out["tissue_clean"][picked] = clean
    out["tissue"][picked] = add_noise(clean, first.snr_db, rng)
    sigma = noise_sigma(clean.max(axis=1), first.snr_db)
    out["residue"][picked] = w * first.residue + rest * second.residue
    out["cbf"][picked], out["cbv"][picked], out["noise_sigma"][picked] = cbf, cbv, sigma
    out["mtt"][picked] = np.where(cbf > 0, 60.0 * cbv / np.where(cbf > 0, cbf, 1.0), first.mtt)
    return replace(sim, **out)
