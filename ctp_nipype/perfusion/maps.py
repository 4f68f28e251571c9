"""The perfusion maps from a flow-scaled residue and the curves' areas: one code path per formula.

Every method of the package (the SVD family of :mod:`.svd`, its batched twin
in :mod:`.evaluation`, the network's inference and its training metrics in
:mod:`ctp_nipype.nn`) turns its residue into maps here, with the conventions'
formulas (``docs/conventions.md``; ``K`` the flow-scaled residue in 1/s, ``C``
the tissue and ``Ca`` the arterial concentration):

* CBF [ml/100 g/min] = ``6000 * kappa_H / rho * max(K)``   (:func:`cbf_from_residue`)
* CBV [ml/100 g]     = ``100 * kappa_H / rho * integral(C) / integral(Ca)``, the same
  trapezoidal rule on the sampled grid for both areas (:func:`curve_area`, :func:`cbv_from_areas`)
* MTT [s]            = ``60 * CBV / CBF``, 0 where either is not positive, never negative
  (:func:`mtt_from_cbv_cbf`)
* Tmax [s]           = time of the residue's maximum, from the first frame (:func:`tmax_from_residue`)

:func:`perfusion_maps` applies all four and the conventions' rule for curves
that cannot be fitted: a non-finite curve, a residue without a positive
maximum or an AIF without a positive area gets 0 in every map.

:func:`cbf_from_residue` also takes torch tensors (the training metrics run on
them); the rest is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import CBF_UNIT_FACTOR, CBV_UNIT_FACTOR, KAPPA_H, RHO
from .convolution import trapezoid_integral
from .triage import DEFAULT_PEAK_INTERPOLATION, peak_time

#: seconds per minute: MTT [s] = SECONDS_PER_MINUTE * CBV [ml/100 g] / CBF [ml/100 g/min]
SECONDS_PER_MINUTE = 60.0


def _peak(residue):
    """The maximum over the last axis of a numpy array or a torch tensor."""
    if hasattr(residue, "amax"):  # torch.Tensor
        return residue.amax(dim=-1)
    return np.max(residue, axis=-1)


def cbf_from_residue(residue, kappa_h=KAPPA_H, rho=RHO):
    """CBF [ml/100 g/min] = ``6000 * kappa_H / rho * max(K)``, K in 1/s along the last axis.

    ``residue`` may be a numpy array or a torch tensor (the result is of the same kind).

    >>> round(float(cbf_from_residue(np.array([0.01, 0.02, 0.005]))), 4)
    84.2308
    """
    return CBF_UNIT_FACTOR * (kappa_h / rho) * _peak(residue)


def curve_area(curves, dt):
    """Area of concentration curves (time last), trapezoidal rule on the sampled grid: HU s.

    The one rule for the tissue's and the AIF's areas of :func:`cbv_from_areas`.

    >>> float(curve_area(np.array([0.0, 2.0, 2.0, 0.0]), 1.5))
    6.0
    """
    return trapezoid_integral(curves, dt)


def cbv_from_areas(tissue_area, aif_area, kappa_h=KAPPA_H, rho=RHO):
    """CBV [ml/100 g] = ``100 * kappa_H / rho * integral(C) / integral(Ca)``; 0 where the AIF's area is not positive.

    ``aif_area`` is a scalar (one AIF for all curves) or one per curve.

    >>> float(cbv_from_areas(4.0, 100.0, kappa_h=1.0, rho=1.0))
    4.0
    >>> cbv_from_areas(np.array([4.0, 4.0]), np.array([100.0, 0.0]), kappa_h=1.0, rho=1.0).tolist()
    [4.0, 0.0]
    """
    tissue_area = np.asarray(tissue_area, dtype=np.float64)
    aif_area = np.asarray(aif_area, dtype=np.float64)
    positive = aif_area > 0
    return np.where(positive, CBV_UNIT_FACTOR * (kappa_h / rho) * tissue_area / np.where(positive, aif_area, 1.0), 0.0)


def mtt_from_cbv_cbf(cbv, cbf):
    """MTT [s] = ``60 * CBV / CBF`` (central volume theorem); 0 where CBF or CBV is not positive.

    A negative CBV (the area of noise in a voxel without enhancement) has no
    transit time: its MTT is 0, never negative.

    >>> mtt_from_cbv_cbf(np.array([4.0, -0.5, 4.0]), np.array([60.0, 30.0, 0.0])).tolist()
    [4.0, 0.0, 0.0]
    """
    cbv = np.asarray(cbv, dtype=np.float64)
    cbf = np.asarray(cbf, dtype=np.float64)
    defined = (cbf > 0) & (cbv > 0)
    return np.where(defined, SECONDS_PER_MINUTE * cbv / np.where(defined, cbf, 1.0), 0.0)


def tmax_from_residue(residue, dt, interpolation=DEFAULT_PEAK_INTERPOLATION):
    """Tmax [s]: time of the residue's maximum from the first frame (:func:`.triage.peak_time`).

    ``interpolation``: ``'sampled'`` (``argmax(K) * dt``) or ``'parabola'``.

    >>> float(tmax_from_residue(np.array([0.1, 0.3, 0.2]), 1.5))
    1.5
    """
    return peak_time(residue, dt, interpolation)


@dataclass
class PerfusionMaps:
    """CBF (ml/100 g/min), CBV (ml/100 g), MTT (s) and Tmax (s) of a set of curves, float64.

    ``usable`` marks the curves whose maps could be computed; the others are 0 in every map.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    usable: np.ndarray


def perfusion_maps(residue, tissue_area, aif_area, dt, kappa_h=KAPPA_H, rho=RHO, valid=None,
                   peak_interpolation=DEFAULT_PEAK_INTERPOLATION):
    """The four maps of curves from their residues and areas, by the conventions' formulas.

    Parameters
    ----------
    residue : ndarray, shape (n, N)
        Flow-scaled residue ``K`` in 1/s on the frame grid.
    tissue_area : ndarray, shape (n,)
        :func:`curve_area` of the tissue concentration curves (HU s).
    aif_area : float or ndarray, shape (n,)
        :func:`curve_area` of the arterial input (one for all curves or one per curve), HU s.
    dt : float
        Frame interval, s.
    kappa_h, rho : float
        Hematocrit factor and tissue density (g/ml).
    valid : ndarray of bool, shape (n,), optional
        Curves that may be fitted at all (finite, inside the mask); default all.
    peak_interpolation : {'sampled', 'parabola'}
        How Tmax is read (:func:`tmax_from_residue`).

    Returns
    -------
    PerfusionMaps
        ``usable = valid & (max(K) > 0) & (aif_area > 0)``; every map is 0 elsewhere.

    Examples
    --------
    >>> k = np.array([[0.02, 0.01, 0.0], [-0.01, -0.02, 0.0]])
    >>> maps = perfusion_maps(k, np.array([1.5, -1.0]), 100.0, 1.0, kappa_h=1.0, rho=1.0)
    >>> maps.cbf.tolist(), maps.cbv.tolist(), maps.mtt.tolist(), maps.usable.tolist()
    ([120.0, 0.0], [1.5, 0.0], [0.75, 0.0], [True, False])
    """
    peak = np.asarray(_peak(residue), dtype=np.float64)
    usable = (peak > 0) & (np.asarray(aif_area) > 0)
    if valid is not None:
        usable &= np.asarray(valid, dtype=bool)
    cbf = np.where(usable, cbf_from_residue(peak[..., None], kappa_h, rho), 0.0)
    cbv = np.where(usable, cbv_from_areas(tissue_area, aif_area, kappa_h, rho), 0.0)
    return PerfusionMaps(
        cbf=cbf,
        cbv=cbv,
        mtt=mtt_from_cbv_cbf(cbv, cbf),
        tmax=np.where(usable, tmax_from_residue(residue, dt, peak_interpolation), 0.0),
        usable=usable,
    )


__all__ = [
    "PerfusionMaps",
    "cbf_from_residue",
    "cbv_from_areas",
    "curve_area",
    "mtt_from_cbv_cbf",
    "perfusion_maps",
    "tmax_from_residue",
]
