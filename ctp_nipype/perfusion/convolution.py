"""The discretised convolution ``C = Ca (x) K`` with the trapezoidal rule.

On a uniform grid ``t_i = i * dt`` the indicator-dilution integral

    C(t_i) = integral_0^{t_i} Ca(t_i - s) K(s) ds

is approximated with the trapezoidal rule in ``s``::

    C[i] = dt * ( sum_{k=0}^{i} Ca[i-k] K[k]  -  (Ca[i] K[0] + Ca[0] K[i]) / 2 ),   C[0] = 0.

As a matrix acting on ``K`` this is the lower-triangular Toeplitz matrix of
``dt * Ca`` with the diagonal halved (``Ca[0] / 2``) and the first column halved
(``Ca[i] / 2``): :func:`toeplitz_matrix`. The block-circulant matrix of
Wu et al. (2003) zero-pads the AIF to ``2N`` samples and wraps the
shift-invariant part of that kernel around (:func:`circulant_matrix`), which
makes the deconvolution insensitive to a delay of the tissue curve relative
to the AIF.

:func:`convolve` applies the same rule to batches of curves; it is the
forward model of the SVD methods and of the network's tissue reconstruction,
so the two agree to rounding.
"""

from __future__ import annotations

import numpy as np


def _check_aif(aif):
    aif = np.asarray(aif, dtype=float)
    if aif.ndim < 1 or aif.shape[-1] < 2:
        raise ValueError(f"The AIF must be a curve of at least 2 samples (time last), got shape {aif.shape}.")
    if not np.all(np.isfinite(aif)):
        raise ValueError("The AIF contains NaN or infinite values.")
    return aif


def toeplitz_matrix(aif, dt):
    """Lower-triangular trapezoidal convolution matrix ``A`` with ``C = A @ K``.

    Parameters
    ----------
    aif : array_like, shape (N,) or (..., N)
        Arterial concentration on a uniform grid; a stack of AIFs gives a stack
        of matrices (one per curve, as in the batched evaluation).
    dt : float
        Frame interval in seconds.

    Returns
    -------
    ndarray, shape (N, N) or (..., N, N)

    Examples
    --------
    >>> toeplitz_matrix([0.0, 2.0, 4.0], dt=1.0)
    array([[0., 0., 0.],
           [1., 0., 0.],
           [2., 2., 0.]])
    """
    aif = _check_aif(aif)
    n = aif.shape[-1]
    index = np.subtract.outer(np.arange(n), np.arange(n))
    matrix = np.where(index >= 0, aif[..., np.clip(index, 0, None)], 0.0)
    matrix[..., np.arange(n), np.arange(n)] *= 0.5
    matrix[..., :, 0] *= 0.5
    matrix[..., 0, 0] = 0.0  # C[0] = 0: an integral over an empty interval
    return dt * matrix


def circulant_matrix(aif, dt, n_padded=None):
    """Block-circulant trapezoidal convolution matrix of the zero-padded AIF.

    The AIF is zero-padded to ``L = n_padded`` samples (default ``2N``) and the
    matrix is the circulant whose first column is the padded trapezoid kernel:
    ``dt * Ca[0] / 2`` on the diagonal and ``dt * Ca[m]`` on the m-th
    sub-diagonal. Unlike :func:`toeplitz_matrix`, the residue's first sample
    is not weighted by one half: under the circulant premise the residue may
    start at any sample (the tissue may be delayed), and halving one fixed
    column would break the shift invariance that makes the method
    insensitive to delay. A tissue curve shifted by ``d`` frames therefore
    deconvolves to the same residue shifted by ``d`` samples.

    ``aif`` of shape ``(..., N)`` (one AIF per curve) gives a stack of
    matrices, ``(..., L, L)``.

    Returns
    -------
    ndarray, shape (L, L) or (..., L, L)

    Examples
    --------
    >>> circulant_matrix([0.0, 2.0], dt=1.0)
    array([[0., 0., 0., 2.],
           [2., 0., 0., 0.],
           [0., 2., 0., 0.],
           [0., 0., 2., 0.]])
    """
    aif = _check_aif(aif)
    n = aif.shape[-1]
    length = 2 * n if n_padded is None else int(n_padded)
    if length < n:
        raise ValueError(f"n_padded ({length}) must be at least the AIF length ({n}).")
    kernel = np.zeros(aif.shape[:-1] + (length,))
    kernel[..., :n] = aif
    kernel[..., 0] *= 0.5
    index = np.subtract.outer(np.arange(length), np.arange(length)) % length
    return dt * kernel[..., index]


def convolve(aif, residue, dt):
    """Trapezoidal convolution of AIF(s) with residue function(s).

    Broadcasts over leading axes: ``aif`` of shape ``(..., N)`` or ``(N,)`` and
    ``residue`` of shape ``(..., N)``. Computed with FFTs of length ``2N``, so
    a batch of a million curves costs a few FFTs.

    Parameters
    ----------
    aif : array_like, shape (..., N)
        Arterial concentration.
    residue : array_like, shape (..., N)
        Flow-scaled residue function ``K`` in 1/s.
    dt : float
        Frame interval in seconds.

    Returns
    -------
    ndarray, shape (..., N)
        Tissue concentration, equal to ``toeplitz_matrix(aif, dt) @ residue``.

    Examples
    --------
    >>> convolve([0.0, 2.0, 4.0], [1.0, 1.0, 1.0], dt=1.0)
    array([0., 1., 4.])
    """
    aif = np.asarray(aif, dtype=float)
    residue = np.asarray(residue, dtype=float)
    n = residue.shape[-1]
    if aif.shape[-1] != n:
        raise ValueError(f"AIF ({aif.shape[-1]} samples) and residue ({n} samples) differ in length.")
    length = 2 * n
    full = np.fft.irfft(np.fft.rfft(aif, length) * np.fft.rfft(residue, length), length)[..., :n]
    correction = 0.5 * (aif * residue[..., :1] + aif[..., :1] * residue)
    out = dt * (full - correction)
    out[..., 0] = 0.0
    return out


def trapezoid_integral(curves, dt, axis=-1):
    """Trapezoidal integral of curves sampled every ``dt`` seconds.

    Computed as ``dt * (sum - (first + last) / 2)``: one pass over the curves
    and no temporary of their size (``np.trapezoid`` makes three, which took
    2 s for the 435,000 brain curves of a 256 x 256 x 16 x 60 scan).

    >>> float(trapezoid_integral([0.0, 1.0, 1.0, 0.0], dt=2.0))
    4.0
    >>> bool(np.isclose(trapezoid_integral(np.arange(5.0), 0.5), np.trapezoid(np.arange(5.0), dx=0.5)))
    True
    """
    curves = np.asarray(curves)
    if curves.dtype.kind not in "fc":
        curves = curves.astype(float)
    if curves.shape[axis] < 2:
        return np.zeros(np.delete(curves.shape, axis % curves.ndim), dtype=curves.dtype)
    first = np.take(curves, 0, axis=axis)
    last = np.take(curves, -1, axis=axis)
    total = curves.sum(axis=axis)
    total -= 0.5 * (first + last)
    return total * dt
