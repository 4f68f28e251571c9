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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .constants import CBF_UNIT_FACTOR, CBV_UNIT_FACTOR, KAPPA_H, RHO
from .constants import SVD_METHODS as METHODS
from .convolution import circulant_matrix, toeplitz_matrix, trapezoid_integral
from .timing import check_frame_times, is_uniform
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
        self.aif_integral = float(trapezoid_integral(aif, self.dt))
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
        n = aif.size

        if method == "ssvd":
            matrix = toeplitz_matrix(aif, self.dt)
        else:
            matrix = circulant_matrix(aif, self.dt)
        u, s, vt = np.linalg.svd(matrix)
        self.singular_values = s
        # Tissue curves are zero-padded, so only the first N rows of U matter. The
        # solution has L samples (L = 2N for the circulant); maps use its first N.
        self._u = u[:n, :]
        self._v = vt.T

        if method == "osvd":
            ladder = np.asarray(DEFAULT_OSVD_LADDER if osvd_thresholds is None else osvd_thresholds, float)
            if threshold is not None:
                ladder = ladder[ladder <= threshold]
                if ladder.size == 0:
                    ladder = np.array([float(threshold)])
            if ladder.size == 0 or np.any(ladder <= 0) or np.any(ladder >= 1):
                raise ValueError("oSVD thresholds must lie strictly between 0 and 1.")
            self.thresholds = np.sort(ladder)
        else:
            value = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
            if not 0 < value < 1:
                raise ValueError(f"The threshold must lie strictly between 0 and 1, got {value}.")
            self.thresholds = np.array([value])
        # number of singular components kept for each threshold
        self._kept = np.array([int(np.count_nonzero(s >= t * s[0])) for t in self.thresholds])

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
        keep = self.singular_values >= threshold * self.singular_values[0]
        return (self._v[:, keep] / self.singular_values[keep]) @ self._u[:, keep].T

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
        out = np.zeros((curves.shape[0], self._v.shape[0]))
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
        flagged = np.zeros(flat.shape[0], dtype=bool)
        area = np.zeros(flat.shape[0], dtype=np.float64)

        pinv = None if self.method == "osvd" else self.pseudo_inverse(self.thresholds[0]).T.astype(np.float32)
        for start in range(0, index.size, self.chunk_size):
            chunk_index = index[start : start + self.chunk_size]
            curves = flat[chunk_index].astype(np.float32)
            finite = np.all(np.isfinite(curves), axis=1)
            curves[~finite] = 0.0
            if self.method == "osvd":
                res, thr, chunk_oi, exhausted = self._fit_osvd(curves)
            else:
                res = curves @ pinv
                thr = np.full(curves.shape[0], self.thresholds[0], np.float32)
                chunk_oi = oscillation_index(res)
                exhausted = np.zeros(curves.shape[0], bool)
            residue[chunk_index] = res[:, :n]
            threshold[chunk_index] = thr
            oi[chunk_index] = np.where(np.isfinite(chunk_oi), chunk_oi, 0)
            flagged[chunk_index] = exhausted | ~finite | (res[:, :n].max(axis=1) <= 0)
            area[chunk_index] = trapezoid_integral(curves.astype(np.float64), self.dt)

        in_mask = mask.ravel()
        finite_voxel = np.all(np.isfinite(flat), axis=1)
        peak = residue.max(axis=1).astype(np.float64)
        usable = in_mask & finite_voxel & (peak > 0)
        flagged &= in_mask
        scale = self.kappa_h / self.rho
        cbf = np.where(usable, CBF_UNIT_FACTOR * scale * peak, 0.0)
        cbv = np.where(in_mask & finite_voxel, CBV_UNIT_FACTOR * scale * area / self.aif_integral, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # a negative area (noise in a voxel without enhancement) has no transit time: MTT 0, not < 0
            mtt = np.where((cbf > 0) & (cbv > 0), 60.0 * cbv / np.where(cbf > 0, cbf, 1.0), 0.0)
        tmax = np.where(usable, peak_time(residue, self.dt, self.peak_interpolation), 0.0)

        def shape(values):
            return values.reshape(spatial).astype(np.float32)

        return SVDFit(
            residue=residue.reshape(spatial + (n,)),
            cbf=shape(cbf),
            cbv=shape(cbv),
            mtt=shape(mtt),
            tmax=shape(tmax),
            threshold=shape(threshold),
            oscillation_index=shape(oi),
            flagged=flagged.reshape(spatial),
            params=self.params,
        )

    def _fit_osvd(self, curves):
        """Wu's ladder, vectorised: the smallest threshold whose OI meets the target, per voxel.

        Thresholds are tried from the smallest up (components removed from the
        full solution rung by rung). With ``ladder_stride`` s > 1 every s-th rung
        is tried first; a voxel that first meets the target at a coarse rung then
        has the rungs between the last failing coarse rung and that one tried in
        order, so the answer equals the full sweep's whenever the OI does not
        dip below the target and back between two coarse rungs. Voxels leave the
        active set as soon as they are decided; the chosen residues are rebuilt
        with one matrix product at the end.
        """
        s = self.singular_values
        projected = curves @ (self._u / s).astype(np.float32)  # (voxels, L) scaled coefficients
        v = self._v.astype(np.float32)
        n_vox = curves.shape[0]
        # one rung per distinct number of kept components, labelled with the smallest
        # threshold that keeps them (thresholds ascend, so np.unique's first index)
        kept, first = np.unique(self._kept, return_index=True)
        rungs = [(int(m), float(t)) for m, t in zip(kept[::-1], self.thresholds[first][::-1]) if m > 0]
        if not rungs:
            return np.zeros((n_vox, v.shape[0]), np.float32), np.zeros(n_vox), np.full(n_vox, np.inf), np.ones(n_vox, bool)
        chosen_m = np.full(n_vox, rungs[-1][0])
        chosen_threshold = np.full(n_vox, self.thresholds.max(), np.float32)
        chosen_oi = np.full(n_vox, np.inf, np.float32)
        met = np.zeros(n_vox, bool)

        stride = max(1, int(self.ladder_stride))
        coarse = list(range(0, len(rungs), stride))
        if coarse[-1] != len(rungs) - 1:
            coarse.append(len(rungs) - 1)
        active = np.arange(n_vox)
        active_projected = projected
        top = rungs[0][0]
        current = active_projected[:, :top] @ v[:, :top].T
        previous = top
        last_coarse = None
        for j in coarse:
            m, threshold = rungs[j]
            if m < previous:
                current -= active_projected[:, m:previous] @ v[:, m:previous].T
                previous = m
            oi = oscillation_index(current)
            ok = oi <= self.oi_threshold
            chosen_oi[active[~ok]] = oi[~ok]  # the last rung's OI stays for voxels that never meet it
            if ok.any():
                index, oi_ok = active[ok], oi[ok]
                chosen_m[index], chosen_threshold[index], chosen_oi[index] = m, threshold, oi_ok
                met[index] = True
                if last_coarse is not None and j - last_coarse > 1:
                    # refine: the skipped rungs (more components), smallest threshold first
                    undecided = np.ones(index.size, bool)
                    for k in range(last_coarse + 1, j):
                        m_k, threshold_k = rungs[k]
                        rows = np.flatnonzero(undecided)
                        if rows.size == 0:
                            break
                        candidate = current[ok][rows] + active_projected[ok][rows][:, m:m_k] @ v[:, m:m_k].T
                        oi_k = oscillation_index(candidate)
                        better = oi_k <= self.oi_threshold
                        hit = index[rows[better]]
                        chosen_m[hit], chosen_threshold[hit], chosen_oi[hit] = m_k, threshold_k, oi_k[better]
                        undecided[rows[better]] = False
                if ok.all():
                    break
                active, active_projected, current = active[~ok], active_projected[~ok], current[~ok]
            last_coarse = j
        components = np.arange(v.shape[0], dtype=np.int64)[None, :] < chosen_m[:, None]
        residue = (projected * components) @ v.T
        return residue, chosen_threshold, chosen_oi, ~met
