"""SVD deconvolution: sSVD, cSVD and oSVD, vectorised over voxels.

The model follows dipy's ``reconst`` pattern: :class:`SVDModel` holds the
arterial input and the method's parameters (the SVD of the AIF matrix is
computed once, here), and :meth:`SVDModel.fit` deconvolves any number of
tissue curves at once, returning an :class:`SVDFit` whose properties are the
perfusion maps.

Methods
-------
``ssvd``
    Standard SVD (Ostergaard et al. 1996): the lower-triangular trapezoidal
    Toeplitz AIF matrix, singular values below ``threshold`` (default 20%) of
    the largest set to zero.
``csvd``
    Block-circulant SVD (Wu et al. 2003): the AIF zero-padded to ``2N`` in a
    circulant matrix, which makes the estimate insensitive to the tissue's
    delay; global threshold, default 10%.
``osvd``
    Oscillation-index SVD (Wu et al. 2003): the block-circulant matrix and, per
    voxel, the smallest threshold of a ladder whose residue has an oscillation
    index ``OI <= oi_threshold`` (default 0.035). Voxels for which even the
    largest threshold of the ladder oscillates more are flagged. As in Wu et
    al. (2003) and the DSC-MRI toolbox, the OI is computed over the whole
    ``2N``-sample circulant solution (``N`` in the formula being its length).

The filtered pseudo-inverse is applied to all voxels as matrix products, in
chunks of ``chunk_size`` voxels that bound the memory; the oSVD ladder is
swept by adding singular components, so every rung costs one small product.

One implementation serves one AIF for all voxels (a scan, :class:`SVDModel`)
and one AIF per curve (simulated curves,
:func:`ctp_nipype.perfusion.evaluation.deconvolve_svd_batch`):
:class:`AIFDecomposition` holds the SVD of one AIF matrix or of a stack of
them, :func:`solve` deconvolves curves with it (the truncated pseudo-inverse
of sSVD/cSVD, :func:`osvd_ladder` for oSVD), and the maps come from
:func:`ctp_nipype.perfusion.maps.perfusion_maps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .constants import KAPPA_H, RHO
from .constants import SVD_METHODS as METHODS
from .convolution import circulant_matrix, toeplitz_matrix
from .maps import curve_area, perfusion_maps
from .timing import check_frame_times, is_uniform
from .triage import DEFAULT_PEAK_INTERPOLATION, PEAK_INTERPOLATIONS
from .triage import DEFAULT_PEAK_INTERPOLATION, PEAK_INTERPOLATIONS, peak_time

DEFAULT_THRESHOLDS = {"ssvd": 0.20, "csvd": 0.10}
DEFAULT_OI_THRESHOLD = 0.035
#: Relative singular-value thresholds tried by oSVD, ascending.
DEFAULT_OSVD_LADDER = tuple(float(x) for x in np.round(np.geomspace(0.002, 0.9, 40), 5))


def oscillation_index(residue, axis=-1):
    """Oscillation index of Wu et al. (2003).

    ``OI = 1 / (N * max r) * sum_{k=2}^{N-1} |r[k] - 2 r[k-1] + r[k-2]|``.
    A curve whose maximum is not positive gets ``inf``.

    Examples
    --------
    >>> float(oscillation_index(np.array([1.0, 1.0, 1.0, 1.0])))
    0.0
    >>> float(oscillation_index(np.array([1.0, 0.0, 1.0, 0.0])))
    1.0
    """
    r = np.moveaxis(np.asarray(residue), axis, -1)
    n = r.shape[-1]
    second = r[..., 2:] - r[..., 1:-1]  # one buffer, updated in place (this runs once per oSVD rung)
    second -= r[..., 1:-1]
    second += r[..., :-2]
    np.abs(second, out=second)
    total = second.sum(axis=-1)
    peak = r.max(axis=-1)
    positive = peak > 0
    return np.where(positive, total / (n * np.where(positive, peak, 1)), np.inf)


def method_thresholds(method, threshold=None, osvd_thresholds=None):
    """The relative singular-value thresholds a method tries, ascending.

    sSVD and cSVD: one (``threshold``, default :data:`DEFAULT_THRESHOLDS`).
    oSVD: the ladder (``osvd_thresholds``, default :data:`DEFAULT_OSVD_LADDER`),
    cut at ``threshold`` when given (the ladder's largest threshold).

    >>> method_thresholds("ssvd").tolist(), method_thresholds("osvd", 0.01, [0.005, 0.01, 0.1]).tolist()
    ([0.2], [0.005, 0.01])
    """
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"Unknown SVD method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "osvd":
        ladder = np.asarray(DEFAULT_OSVD_LADDER if osvd_thresholds is None else osvd_thresholds, float)
        if threshold is not None:
            ladder = ladder[ladder <= threshold]
            if ladder.size == 0:
                ladder = np.array([float(threshold)])
        if ladder.size == 0 or np.any(ladder <= 0) or np.any(ladder >= 1):
            raise ValueError("oSVD thresholds must lie strictly between 0 and 1.")
        return np.sort(ladder)
    value = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if not 0 < value < 1:
        raise ValueError(f"The threshold must lie strictly between 0 and 1, got {value}.")
    return np.array([value])


class AIFDecomposition:
    """The SVD of the trapezoidal convolution matrix of one AIF, or of one AIF per curve.

    Parameters
    ----------
    aif : ndarray, shape (N,) or (n, N)
        Arterial concentration on a uniform grid: one AIF for all curves (a
        scan) or one per curve (a stack; simulated curves).
    dt : float
        Frame interval, s.
    circulant : bool
        The block-circulant matrix of cSVD/oSVD (``L = 2N``) instead of sSVD's
        lower-triangular Toeplitz matrix (``L = N``).

    Attributes
    ----------
    u : ndarray, shape (N, L) or (n, N, L)
        The first ``N`` rows of ``U`` (tissue curves are zero-padded).
    s : ndarray, shape (L,) or (n, L)
        Singular values, descending.
    vt : ndarray, shape (L, L) or (n, L, L)
        ``V^T``: row ``k`` is the ``k``-th singular component of the solution.
    shared : bool
        One AIF for all curves.
    """

    def __init__(self, aif, dt, circulant):
        aif = np.asarray(aif, dtype=float)
        matrix = circulant_matrix(aif, dt) if circulant else toeplitz_matrix(aif, dt)
        u, s, vt = np.linalg.svd(matrix)
        self.n_frames = aif.shape[-1]
        self.u = u[..., : self.n_frames, :]
        self.s = s
        self.vt = vt
        self.shared = aif.ndim == 1
        self._cast = {}

    @property
    def length(self):
        """``L``, the samples of the full solution."""
        return self.s.shape[-1]

    def kept(self, thresholds):
        """Singular components kept at each relative threshold: ``(len(thresholds),)`` or ``(n, len(thresholds))``."""
        thresholds = np.asarray(thresholds, dtype=float)
        s = self.s
        return np.count_nonzero(s[..., None, :] >= thresholds[:, None] * s[..., :1, None], axis=-1)

    def pseudo_inverse(self, threshold):
        """The truncated pseudo-inverse ``V diag(1/s) U_N^T`` (L x N) of one AIF for one relative threshold."""
        if not self.shared:
            raise ValueError("pseudo_inverse is defined for one AIF; a stack has one per curve.")
        keep = self.s >= threshold * self.s[0]
        return (self.vt.T[:, keep] / self.s[keep]) @ self.u[:, keep].T

    def _as(self, name, dtype):
        """A cached copy of a factor in ``dtype``: ``'basis'`` (V^T) or ``'projector'`` (U_N / s, one AIF)."""
        key = (name, np.dtype(dtype))
        if key not in self._cast:
            if name == "basis":
                value = self.vt.T.astype(dtype).T if self.shared else self.vt.astype(dtype, copy=False)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    scale = self.s[..., None, :]
                    value = (self.u / scale).astype(dtype)
                value[~np.isfinite(value)] = 0.0  # an all-zero AIF: no components
            self._cast[key] = value
        return self._cast[key]

    def project(self, curves):
        """Coefficients of the curves' full solution on the singular components, ``U_N^T c / s``: (n, L).

        Computed in the dtype of ``curves``.
        """
        if self.shared:
            return curves @ self._as("projector", curves.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            coefficients = np.matmul(curves[:, None, :], self.u.astype(curves.dtype, copy=False))[:, 0, :] / self.s
        coefficients[~np.isfinite(coefficients)] = 0.0  # an all-zero AIF: no components
        return coefficients.astype(curves.dtype, copy=False)

    def components(self, coefficients, start, stop, rows=None, full=False):
        """``sum_{start <= k < stop} coefficients_k * vt_k`` per curve: residues, (n, L).

        ``start`` and ``stop`` are one number or one per curve; ``rows`` picks
        the curves' own bases in a stack (default: the first ``n``). With
        ``full`` the product runs over all ``L`` components (masked), so that
        its rounding does not depend on where the range ends.
        """
        n, length = coefficients.shape
        start = np.broadcast_to(np.asarray(start, dtype=np.int64), (n,))
        stop = np.broadcast_to(np.asarray(stop, dtype=np.int64), (n,))
        if n == 0:
            return np.zeros((0, length), coefficients.dtype)
        basis = self._as("basis", coefficients.dtype)
        low, high = (0, length) if full else (int(start.min()), int(stop.max()))
        if high <= low:
            return np.zeros((n, length), coefficients.dtype)
        part = coefficients[:, low:high]
        if full or np.any(start != low) or np.any(stop != high):
            k = np.arange(low, high)
            part = part * ((k >= start[:, None]) & (k < stop[:, None]))
        if self.shared:
            return part @ basis[low:high]
        stack = basis[:n, low:high] if rows is None else basis[rows, low:high]
        return np.matmul(part[:, None, :], stack)[:, 0, :]


def _rung_table(kept, thresholds):
    """oSVD's rungs per curve: distinct positive numbers of kept components, most first, and their thresholds.

    A rung is labelled with the smallest threshold that keeps its components
    (thresholds ascend, so counts do not increase along the ladder). Returns
    ``(components, thresholds)``, both ``(n, R)``; a curve with fewer than
    ``R`` rungs repeats its last one.
    """
    kept = np.atleast_2d(kept)
    new = np.ones(kept.shape, bool)
    new[:, 1:] = kept[:, 1:] != kept[:, :-1]
    new &= kept > 0
    count = new.sum(axis=1)
    n_rungs = int(count.max(initial=0))
    if n_rungs == 0:
        return np.zeros((kept.shape[0], 0), np.int64), np.zeros((kept.shape[0], 0))
    rows, columns = np.nonzero(new)
    rank = np.cumsum(new, axis=1)[rows, columns] - 1
    components = np.zeros((kept.shape[0], n_rungs), np.int64)
    labels = np.zeros((kept.shape[0], n_rungs))
    components[rows, rank] = kept[rows, columns]
    labels[rows, rank] = np.asarray(thresholds, float)[columns]
    last = np.minimum(np.arange(n_rungs)[None, :], np.maximum(count, 1)[:, None] - 1)
    return np.take_along_axis(components, last, axis=1), np.take_along_axis(labels, last, axis=1)


def osvd_ladder(decomposition, coefficients, thresholds, oi_threshold=DEFAULT_OI_THRESHOLD, ladder_stride=4):
    """Wu's oSVD, vectorised: per curve, the smallest threshold of the ladder whose residue has ``OI <= oi_threshold``.

    The one ladder of the package: :class:`SVDModel` (one AIF) and the batched
    evaluation (one AIF per curve) both call it.

    Thresholds are tried from the smallest up (components removed from the
    full solution rung by rung; a rung is a distinct number of kept
    components, see :func:`_rung_table`). With ``ladder_stride`` s > 1 every
    s-th rung is tried first; a curve that first meets the target at a coarse
    rung then has the rungs between the last failing coarse rung and that one
    tried in order, so the answer equals the full sweep's (s = 1) whenever the
    OI does not dip below the target and back between two coarse rungs. Curves
    leave the active set as soon as they are decided; the chosen residues are
    rebuilt with one product at the end. The OI is measured over the whole
    ``L``-sample solution, as in Wu et al. (2003).

    Parameters
    ----------
    decomposition : AIFDecomposition
    coefficients : ndarray, shape (n, L)
        :meth:`AIFDecomposition.project` of the curves (its dtype is kept).
    thresholds : array_like
        The ladder, ascending (:func:`method_thresholds`).
    oi_threshold : float
    ladder_stride : int

    Returns
    -------
    residue : ndarray (n, L)
    threshold : ndarray (n,), float32
        The chosen threshold (the ladder's largest for curves that never meet the target).
    oi : ndarray (n,), float32
        The OI of the chosen residue (for those curves: of the last rung tried).
    exhausted : ndarray of bool (n,)
        Curves that never met the target.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    n = coefficients.shape[0]
    rung_components, rung_thresholds = _rung_table(decomposition.kept(thresholds), thresholds)
    if decomposition.shared:  # one AIF: one row of rungs for every curve
        rung_components = np.broadcast_to(rung_components, (n, rung_components.shape[1]))
        rung_thresholds = np.broadcast_to(rung_thresholds, (n, rung_thresholds.shape[1]))
    n_rungs = rung_components.shape[1]
    if n_rungs == 0 or n == 0:
        return (np.zeros((n, decomposition.length), coefficients.dtype), np.full(n, thresholds.max(), np.float32),
                np.full(n, np.inf, np.float32), np.ones(n, bool))
    chosen_m = rung_components[:, -1].copy()
    chosen_threshold = np.full(n, thresholds.max(), np.float32)
    chosen_oi = np.full(n, np.inf, np.float32)
    met = np.zeros(n, bool)

    stride = max(1, int(ladder_stride))
    coarse = list(range(0, n_rungs, stride))
    if coarse[-1] != n_rungs - 1:
        coarse.append(n_rungs - 1)
    active = np.arange(n)
    active_coefficients = coefficients
    previous = rung_components[:, 0]
    current = decomposition.components(active_coefficients, 0, previous)
    last_coarse = None
    for j in coarse:
        m, threshold = rung_components[active, j], rung_thresholds[active, j]
        if np.any(m < previous):
            current -= decomposition.components(active_coefficients, m, previous, rows=active)
        previous = m
        oi = oscillation_index(current)
        ok = oi <= oi_threshold
        chosen_oi[active[~ok]] = oi[~ok]  # the last rung's OI stays for curves that never meet it
        if ok.any():
            index = active[ok]
            chosen_m[index], chosen_threshold[index], chosen_oi[index] = m[ok], threshold[ok], oi[ok]
            met[index] = True
            if last_coarse is not None and j - last_coarse > 1:
                # refine: the skipped rungs (more components), smallest threshold first
                undecided = np.ones(index.size, bool)
                passed_current, passed_coefficients, passed_m = current[ok], active_coefficients[ok], m[ok]
                for k in range(last_coarse + 1, j):
                    rows = np.flatnonzero(undecided)
                    if rows.size == 0:
                        break
                    m_k, threshold_k = rung_components[index[rows], k], rung_thresholds[index[rows], k]
                    candidate = passed_current[rows] + decomposition.components(
                        passed_coefficients[rows], passed_m[rows], m_k, rows=index[rows])
                    oi_k = oscillation_index(candidate)
                    better = oi_k <= oi_threshold
                    hit = index[rows[better]]
                    chosen_m[hit], chosen_threshold[hit], chosen_oi[hit] = m_k[better], threshold_k[better], oi_k[better]
                    undecided[rows[better]] = False
            if ok.all():
                break
            active, active_coefficients = active[~ok], active_coefficients[~ok]
            current, previous = current[~ok], previous[~ok]
        last_coarse = j
    residue = decomposition.components(coefficients, 0, chosen_m, full=True)
    return residue, chosen_threshold, chosen_oi, ~met


def solve(decomposition, curves, method, thresholds, oi_threshold=DEFAULT_OI_THRESHOLD, ladder_stride=4,
          coefficients=None):
    """Deconvolve curves with an AIF decomposition: full-length residues and the threshold used per curve.

    Parameters
    ----------
    decomposition : AIFDecomposition
        One AIF for all curves, or one per curve (then ``curves[i]`` goes with AIF ``i``).
    curves : ndarray, shape (n, N)
        Tissue concentration; the computation runs in its dtype.
    method : {'ssvd', 'csvd', 'osvd'}
    thresholds : array_like
        :func:`method_thresholds` of the method.
    oi_threshold, ladder_stride :
        oSVD's target and ladder stride (:func:`osvd_ladder`).
    coefficients : ndarray, optional
        :meth:`AIFDecomposition.project` of ``curves``, when already computed (cSVD and oSVD share it).

    Returns
    -------
    residue : ndarray (n, L)
    threshold : ndarray (n,), float32
    oi : ndarray (n,), float32
        Oscillation index of the full-length residue.
    exhausted : ndarray of bool (n,)
        oSVD only: the ladder ran out before the OI met the target.
    """
    n = curves.shape[0]
    if method == "osvd":
        if coefficients is None:
            coefficients = decomposition.project(curves)
        return osvd_ladder(decomposition, coefficients, thresholds, oi_threshold, ladder_stride)
    value = float(np.asarray(thresholds)[0])
    if decomposition.shared:
        key = ("pinv", value, curves.dtype)
        if key not in decomposition._cast:
            decomposition._cast[key] = decomposition.pseudo_inverse(value).T.astype(curves.dtype)
        residue = curves @ decomposition._cast[key]
    else:
        if coefficients is None:
            coefficients = decomposition.project(curves)
        residue = decomposition.components(coefficients, 0, decomposition.kept([value])[:, 0])
    return residue, np.full(n, value, np.float32), oscillation_index(residue).astype(np.float32), np.zeros(n, bool)


@dataclass
class SVDFit:
    """Result of :meth:`SVDModel.fit`; every map has the leading shape of the input.

    Attributes
    ----------
    residue : ndarray, shape (..., N)
        Flow-scaled residue function ``K`` in 1/s (first ``N`` samples).
    cbf : ndarray
        ml/100 g/min.
    cbv : ndarray
        ml/100 g.
    mtt : ndarray
        s.
    tmax : ndarray
        s, time of the residue's maximum (sampled, or refined by a parabola: ``peak_interpolation``).
    threshold : ndarray
        The relative singular-value threshold used per voxel.
    oscillation_index : ndarray
        OI of the full-length solution (``L`` samples, see :meth:`SVDModel.deconvolve`).
    flagged : ndarray of bool
        Voxels that could not be fitted (non-finite curve, no positive
        residue) or, for oSVD, whose ladder ran out before OI met the target.
        Their maps are 0 where they cannot be computed.
    """

    residue: np.ndarray
    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    threshold: np.ndarray
    oscillation_index: np.ndarray
    flagged: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def n_flagged(self):
        return int(np.count_nonzero(self.flagged))


class SVDModel:
    """SVD deconvolution of tissue curves by a global AIF.

    Parameters
    ----------
    aif : array_like, shape (N,)
        Arterial concentration (baseline subtracted, HU change) on a uniform grid.
    frame_times : array_like, shape (N,)
        Frame times in seconds, uniformly spaced (see
        :func:`ctp_nipype.perfusion.timing.resample_to_uniform`).
    method : {'ssvd', 'csvd', 'osvd'}
    threshold : float, optional
        Relative singular-value threshold for sSVD/cSVD (default 0.20 / 0.10).
        For oSVD, the largest threshold of the ladder (default: the ladder's).
    oi_threshold : float
        Target oscillation index for oSVD.
    osvd_thresholds : sequence of float, optional
        The ladder of relative thresholds oSVD tries.
    kappa_h : float
        Hematocrit factor.
    rho : float
        Brain tissue density in g/ml.
    chunk_size : int
        Voxels processed per matrix product (bounds the memory).
    peak_interpolation : {'sampled', 'parabola'}
        How Tmax is read from the residue (:func:`ctp_nipype.perfusion.triage.peak_time`):
        the sampled maximum, or a parabola through it and its neighbours.
    ladder_stride : int
        oSVD tries every ``ladder_stride``-th rung of the ladder first and refines
        between the last failing and the first passing one (1: Wu's full sweep).
    dtype : numpy dtype
        Precision of the products over voxels (float32 halves the time and memory
        of a scan; the decomposition itself is always float64).

    Examples
    --------
    >>> t = np.arange(60.0)
    >>> aif = 300 * np.clip(t - 10, 0, None) ** 3 * np.exp(-np.clip(t - 10, 0, None) / 1.5) / 2000
    >>> model = SVDModel(aif, t, method="csvd")
    >>> fit = model.fit(np.zeros((2, 60)))
    >>> fit.cbf.shape
    (2,)
    """

    def __init__(
        self,
        aif,
        frame_times,
        method="osvd",
        threshold=None,
        oi_threshold=DEFAULT_OI_THRESHOLD,
        osvd_thresholds=None,
        kappa_h=KAPPA_H,
        rho=RHO,
        chunk_size=8192,
        ladder_stride=4,
        dtype=np.float32,
        peak_interpolation=DEFAULT_PEAK_INTERPOLATION,
    ):
        method = str(method).lower()
        if peak_interpolation not in PEAK_INTERPOLATIONS:
            raise ValueError(
                f"Unknown Tmax peak interpolation {peak_interpolation!r}; choose one of {', '.join(PEAK_INTERPOLATIONS)}."
            )
        self.peak_interpolation = peak_interpolation
        if method not in METHODS:
            raise ValueError(f"Unknown SVD method {method!r}; choose one of {', '.join(METHODS)}.")
        aif = np.asarray(aif, dtype=float)
        if aif.ndim != 1:
            raise ValueError(f"The AIF must be one curve (1D), got shape {aif.shape}.")
        if aif.size < 3:
            raise ValueError(f"The AIF needs at least 3 frames, got {aif.size}.")
        if not np.all(np.isfinite(aif)):
            raise ValueError("The AIF contains NaN or infinite values.")
        times = check_frame_times(frame_times, aif.size)
        if not is_uniform(times):
            raise ValueError(
                "SVD deconvolution needs uniformly spaced frames; resample the series first "
                "(ctp_nipype.perfusion.timing.resample_to_uniform)."
            )
        if kappa_h <= 0 or rho <= 0:
            raise ValueError(f"kappa_h and rho must be positive, got {kappa_h} and {rho}.")
        self.dt = float(np.mean(np.diff(times)))
        self.aif_integral = float(curve_area(aif, self.dt))
        if not self.aif_integral > 0:
            raise ValueError(
                "The AIF's area is not positive: it must be a concentration curve "
                "(baseline subtracted) with a bolus."
            )
        self.aif = aif
        self.frame_times = times
        self.method = method
        self.oi_threshold = float(oi_threshold)
        self.kappa_h = float(kappa_h)
        self.rho = float(rho)
        self.chunk_size = int(chunk_size)
        self.ladder_stride = int(ladder_stride)
        self.dtype = np.dtype(dtype)
        self.decomposition = AIFDecomposition(aif, self.dt, circulant=method != "ssvd")
        self.singular_values = self.decomposition.s
        self.thresholds = method_thresholds(method, threshold, osvd_thresholds)

    @property
    def params(self):
        """The parameters that define this model (for sidecars)."""
        out = {
            "Method": self.method,
            "KappaH": self.kappa_h,
            "TissueDensity": self.rho,
            "FrameInterval": self.dt,
            "TmaxPeakInterpolation": self.peak_interpolation,
        }
        if self.method == "osvd":
            out["OscillationIndexThreshold"] = self.oi_threshold
            out["ThresholdLadder"] = [float(t) for t in self.thresholds]
        else:
            out["Threshold"] = float(self.thresholds[0])
        return out

    def pseudo_inverse(self, threshold):
        """The truncated pseudo-inverse ``V diag(1/s) U_N^T`` (L x N) for one relative threshold."""
        return self.decomposition.pseudo_inverse(threshold)

    def deconvolve(self, curves, threshold):
        """Full-length residues (``L`` samples) of curves for given relative thresholds.

        Parameters
        ----------
        curves : ndarray, shape (n, N)
            Tissue concentration.
        threshold : float or ndarray, shape (n,)
            One threshold for all curves, or one per curve (e.g. ``SVDFit.threshold``).

        Returns
        -------
        ndarray, shape (n, L)
        """
        curves = np.asarray(curves, dtype=np.float64)
        thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), curves.shape[:1])
        out = np.zeros((curves.shape[0], self.decomposition.length))
        for value in np.unique(thresholds):  # a handful of distinct thresholds, not voxels
            rows = thresholds == value
            out[rows] = curves[rows] @ self.pseudo_inverse(value).T
        return out

    def fit(self, concentration, mask=None):
        """Deconvolve tissue concentration curves.

        Parameters
        ----------
        concentration : array_like, shape (..., N)
            Tissue concentration (HU change), time last.
        mask : array_like of bool, shape (...), optional
            Voxels to fit; others get zeros.

        Returns
        -------
        SVDFit
        """
        data = np.asarray(concentration)
        n = self.aif.size
        if data.shape[-1] != n:
            raise ValueError(
                f"The tissue curves have {data.shape[-1]} frames but the AIF has {n}; "
                "they must be sampled on the same grid."
            )
        spatial = data.shape[:-1]
        if mask is None:
            mask = np.ones(spatial, dtype=bool)
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != spatial:
                raise ValueError(f"The mask has shape {mask.shape} but the data's spatial shape is {spatial}.")
        index = np.flatnonzero(mask.ravel())
        flat = data.reshape(-1, n)

        residue = np.zeros((flat.shape[0], n), dtype=np.float32)  # first N samples
        threshold = np.zeros(flat.shape[0], dtype=np.float32)
        oi = np.zeros(flat.shape[0], dtype=np.float32)
        exhausted = np.zeros(flat.shape[0], dtype=bool)
        area = np.zeros(flat.shape[0], dtype=np.float64)
        finite = np.zeros(flat.shape[0], dtype=bool)
        for start in range(0, index.size, self.chunk_size):
            chunk_index = index[start : start + self.chunk_size]
            curves = flat[chunk_index].astype(self.dtype)
            chunk_finite = np.all(np.isfinite(curves), axis=1)
            curves[~chunk_finite] = 0.0
            res, thr, chunk_oi, chunk_exhausted = solve(
                self.decomposition, curves, self.method, self.thresholds, self.oi_threshold, self.ladder_stride
            )
            residue[chunk_index] = res[:, :n]
            threshold[chunk_index] = thr
            oi[chunk_index] = np.where(np.isfinite(chunk_oi), chunk_oi, 0)
            exhausted[chunk_index] = chunk_exhausted
            finite[chunk_index] = chunk_finite
            area[chunk_index] = curve_area(curves.astype(np.float64), self.dt)

        maps = perfusion_maps(residue, area, self.aif_integral, self.dt, self.kappa_h, self.rho, valid=finite,
                              peak_interpolation=self.peak_interpolation)
        in_mask = mask.ravel()
        flagged = in_mask & (exhausted | ~maps.usable)

        def shape(values):
            return values.reshape(spatial).astype(np.float32)

        return SVDFit(
            residue=residue.reshape(spatial + (n,)),
            cbf=shape(maps.cbf),
            cbv=shape(maps.cbv),
            mtt=shape(maps.mtt),
            tmax=shape(maps.tmax),
            threshold=shape(threshold),
            oscillation_index=shape(oi),
            flagged=flagged.reshape(spatial),
            params=self.params,
        )
