"""Running perfusion methods over simulated curves with known truth, and the paper's metrics.

Methods are plugins: a method is a callable
``method(global_aif, tissue, frame_times) -> dict`` taking one global AIF per
curve, ``(n, T)`` in HU above baseline, the tissue curves ``(n, T)`` and the
shared frame times ``(T,)`` in seconds, and returning at least ``'cbf'``
(``(n,)``, ml/100 g/min) and ``'delay'`` (``(n,)``, s: Tmax for the SVD
family, BAD for the network), and optionally ``'local_aif'`` (``(n, T)``, HU).
:data:`METHODS` holds the registered ones (:func:`register_method`):
``ssvd``, ``csvd`` and ``osvd`` from here, and ``transformer``, which
:mod:`ctp_nipype.nn.inference` registers when it is imported (the layer above
fills the registry: this module never imports the network).

Every simulated curve has its own AIF, so the SVD family runs batched
(:func:`deconvolve_svd_batch`): a stack of AIF matrices is decomposed with one
``np.linalg.svd`` call per block of curves
(:class:`~ctp_nipype.perfusion.svd.AIFDecomposition`) and deconvolved by the
code of :class:`~ctp_nipype.perfusion.svd.SVDModel` (:func:`~ctp_nipype.perfusion.svd.solve`,
the one oSVD ladder; same results curve by curve).

Metrics (Zeng et al. 2025, section 2.5): RMSE of CBF and of the delay against
the true delay, the ratio of estimated to true CBF (mean and standard
deviation), and, for methods that return a local AIF, the Pearson correlation
with the true local AIF and the errors of its peak height (relative), time to
peak (s) and full width at half maximum (s).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .constants import KAPPA_H, RHO, SVD_METHODS
from .maps import curve_area, perfusion_maps
from .svd import (
    DEFAULT_OI_THRESHOLD,
    DEFAULT_OSVD_LADDER,
    DEFAULT_THRESHOLDS,
    AIFDecomposition,
    method_thresholds,
    solve,
)
from ..sims.testsets import TEST_SETS, curve_levels
from .timing import check_frame_times, is_uniform


# ----------------------------------------------------------------------------- batched SVD


def _limit_blas_threads():
    """One BLAS thread per call: LAPACK on small matrices is fastest single-threaded (threads per block instead)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (nilearn)
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _deconvolve_block(aif, tissue, dt, methods, options):
    """All requested SVD methods for one block of curves (each with its own AIF): :func:`.svd.solve` per method."""
    n = aif.shape[1]
    out = {}
    for circulant, names in ((False, [m for m in methods if m == "ssvd"]),
                             (True, [m for m in methods if m in ("csvd", "osvd")])):
        if not names:
            continue
        decomposition = AIFDecomposition(aif, dt, circulant)
        coefficients = decomposition.project(tissue)  # shared by cSVD and oSVD
        for name in names:
            residue, threshold, _, exhausted = solve(
                decomposition, tissue, name, options["thresholds"][name], options["oi_threshold"],
                options["ladder_stride"], coefficients=coefficients,
            )
            out[name] = (residue[:, :n], threshold, exhausted)
    return out


def deconvolve_svd_batch(
    global_aif,
    tissue,
    frame_times,
    methods=SVD_METHODS,
    thresholds=None,
    oi_threshold=DEFAULT_OI_THRESHOLD,
    osvd_thresholds=DEFAULT_OSVD_LADDER,
    kappa_h=KAPPA_H,
    rho=RHO,
    chunk_size=256,
    workers=2,
    ladder_stride=1,
    dtype=np.float64,
):
    """sSVD, cSVD and/or oSVD of curves that each have their own AIF.

    Parameters
    ----------
    global_aif, tissue : array_like, shape (n, T)
        One AIF per tissue curve and the tissue curves, HU above baseline.
    frame_times : array_like, shape (T,)
        Uniform frame times, s.
    methods : sequence of str
        Any of ``'ssvd'``, ``'csvd'``, ``'osvd'``; cSVD and oSVD share one
        decomposition per curve.
    thresholds : dict, optional
        Relative singular-value thresholds of sSVD and cSVD (default 0.2, 0.1).
    oi_threshold : float
        oSVD's target oscillation index.
    osvd_thresholds : sequence of float
        oSVD's threshold ladder.
    kappa_h, rho : float
        Hematocrit factor and tissue density (g/ml).
    chunk_size : int
        Curves per ``np.linalg.svd`` call (memory: about ``chunk_size * 3 * (2T)^2 * 8`` bytes).
    workers : int
        Threads over blocks (LAPACK runs single-threaded within each).
    ladder_stride : int
        oSVD's ladder stride (:func:`~ctp_nipype.perfusion.svd.osvd_ladder`); 1, Wu's full sweep, by default.
    dtype : numpy dtype
        Precision of the products over curves (the decompositions are float64).

    The deconvolution is :func:`ctp_nipype.perfusion.svd.solve` on a stack of
    AIF decompositions and the maps :func:`ctp_nipype.perfusion.maps.perfusion_maps`:
    the code of :class:`~ctp_nipype.perfusion.svd.SVDModel`, which gives the
    same results curve by curve with the same ``ladder_stride`` and ``dtype``.

    Returns
    -------
    dict
        ``{method: {'cbf', 'cbv', 'mtt', 'tmax', 'residue', 'threshold', 'flagged'}}``
        with the units of :class:`~ctp_nipype.perfusion.svd.SVDFit`;
        ``residue`` holds the first ``T`` samples of ``K`` (1/s).

    Examples
    --------
    >>> t = np.arange(40.0)
    >>> aif = np.tile(300 * (t / 4) ** 3 * np.exp(3 - 3 * t / 4) / 1.0, (2, 1))
    >>> out = deconvolve_svd_batch(aif, np.zeros((2, 40)), t, methods=("csvd",))
    >>> out["csvd"]["cbf"].shape
    (2,)
    """
    aif = np.asarray(global_aif, dtype=float)
    tissue = np.asarray(tissue, dtype=float)
    if aif.ndim != 2 or tissue.shape != aif.shape:
        raise ValueError(
            f"global_aif and tissue must both have shape (n_curves, n_frames), got {aif.shape} and {tissue.shape}."
        )
    times = check_frame_times(frame_times, aif.shape[1])
    if not is_uniform(times):
        raise ValueError("SVD deconvolution needs uniformly spaced frames; resample the curves first.")
    unknown = sorted(set(methods) - set(SVD_METHODS))
    if unknown:
        raise ValueError(f"Unknown SVD method(s) {unknown}; choose from {SVD_METHODS}.")
    chosen = dict(DEFAULT_THRESHOLDS, **(thresholds or {}))
    options = {
        "thresholds": {name: method_thresholds(name, chosen.get(name), osvd_thresholds) for name in methods},
        "oi_threshold": float(oi_threshold),
        "ladder_stride": int(ladder_stride),
    }
    dt = float(np.mean(np.diff(times)))
    finite = np.all(np.isfinite(aif), axis=1) & np.all(np.isfinite(tissue), axis=1)
    aif_clean = np.where(finite[:, None], aif, 0.0)
    tissue_clean = np.where(finite[:, None], tissue, 0.0).astype(dtype)
    starts = range(0, aif.shape[0], int(chunk_size))
    with _limit_blas_threads():
        def block(start):
            stop = start + int(chunk_size)
            return _deconvolve_block(aif_clean[start:stop], tissue_clean[start:stop], dt, methods, options)

        if workers > 1 and len(starts) > 1:
            with ThreadPoolExecutor(int(workers)) as pool:
                blocks = list(pool.map(block, starts))
        else:
            blocks = [block(start) for start in starts]

    aif_area = curve_area(aif_clean, dt)
    tissue_area = curve_area(tissue_clean.astype(np.float64), dt)
    results = {}
    for name in methods:
        residue, threshold, exhausted = (np.concatenate([b[name][k] for b in blocks]) for k in range(3))
        maps = perfusion_maps(residue, tissue_area, aif_area, dt, kappa_h, rho, valid=finite)
        results[name] = {
            "cbf": maps.cbf,
            "cbv": maps.cbv,
            "mtt": maps.mtt,
            "tmax": maps.tmax,
            "residue": residue,
            "threshold": threshold,
            "flagged": exhausted | ~maps.usable,
        }
    return results


# ----------------------------------------------------------------------------- method plugins

#: Registered methods: name -> callable(global_aif (n, T), tissue (n, T), frame_times (T,)) -> dict.
METHODS = {}


def register_method(name, function):
    """Register ``function(global_aif, tissue, frame_times) -> {'cbf', 'delay'[, 'local_aif']}`` as ``name``."""
    if not callable(function):
        raise TypeError(f"A method must be callable, got {type(function).__name__} for {name!r}.")
    METHODS[str(name)] = function
    return function


def _svd_method(name):
    def method(global_aif, tissue, frame_times, **options):
        result = deconvolve_svd_batch(global_aif, tissue, frame_times, methods=(name,), **options)[name]
        return dict(result, delay=result["tmax"])

    method.__name__ = name
    method.__doc__ = f"{name} (batched): 'cbf' ml/100 g/min and 'delay' = Tmax in s, per curve."
    return method


for _name in SVD_METHODS:
    register_method(_name, _svd_method(_name))


def run_methods(names, global_aif, tissue, frame_times, options=None):
    """Run the named methods on one group of curves; the SVD family shares its decompositions.

    ``options`` maps a method name to extra keyword arguments. Returns
    ``{name: {'cbf', 'delay'[, 'local_aif']}}``.
    """
    options = options or {}
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        hint = (" ('transformer' is registered by importing ctp_nipype.nn.inference)"
                if "transformer" in unknown else "")
        raise ValueError(f"Unknown method(s) {unknown}; registered: {sorted(METHODS)}{hint}.")
    results = {}
    svd_names = [n for n in names if n in SVD_METHODS and METHODS[n].__name__ == n and n not in options]
    if svd_names:
        for name, result in deconvolve_svd_batch(global_aif, tissue, frame_times, methods=svd_names).items():
            results[name] = dict(result, delay=result["tmax"])
    for name in names:
        if name not in results:
            results[name] = METHODS[name](global_aif, tissue, frame_times, **options.get(name, {}))
    for name, result in results.items():
        missing = {"cbf", "delay"} - set(result)
        if missing:
            raise ValueError(f"Method {name!r} returned no {sorted(missing)}; a method must return 'cbf' and 'delay'.")
    return results


# ----------------------------------------------------------------------------- metrics


def rmse(estimate, truth):
    """Root mean square error.

    >>> float(rmse([1.0, 3.0], [0.0, 0.0]))
    2.23606797749979
    """
    diff = np.asarray(estimate, dtype=float) - np.asarray(truth, dtype=float)
    return float(np.sqrt(np.mean(diff**2))) if diff.size else float("nan")


def pearson_rows(a, b):
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (nan for a flat row).

    >>> pearson_rows([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    array([ 1., -1.])
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((a**2).sum(axis=-1) * (b**2).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=-1) / np.where(denominator > 0, denominator, 1), np.nan)


def full_width_half_maximum(curves, frame_times):
    """FWHM of each curve's highest peak, s, with linear interpolation of the half-maximum crossings.

    A side that never falls below half the peak inside the window is cut at
    the window's edge.

    >>> t = np.arange(0.0, 10.0)
    >>> float(full_width_half_maximum([[0, 0, 1, 2, 4, 2, 1, 0, 0, 0]], t)[0])
    2.0
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    times = np.asarray(frame_times, dtype=float)
    n_frames = curves.shape[1]
    rows = np.arange(curves.shape[0])
    peak_index = np.argmax(curves, axis=1)
    half = curves[rows, peak_index] / 2
    frame = np.arange(n_frames)[None, :]
    below = curves < half[:, None]
    left = np.where(below & (frame < peak_index[:, None]), frame, -1).max(axis=1)
    right = np.where(below & (frame > peak_index[:, None]), frame, n_frames).min(axis=1)

    def crossing(outside, inside):
        c_out, c_in = curves[rows, outside], curves[rows, inside]
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(c_in != c_out, (half - c_out) / (c_in - c_out), 0.0)
        return times[outside] + fraction * (times[inside] - times[outside])

    start = np.where(left >= 0, crossing(np.clip(left, 0, None), np.clip(left + 1, 0, n_frames - 1)), times[0])
    stop = np.where(right < n_frames, crossing(np.clip(right, None, n_frames - 1), np.clip(right - 1, 0, None)),
                    times[-1])
    return stop - start


def local_aif_metrics(estimated, truth, frame_times):
    """Per-curve agreement of estimated and true local AIFs (section 2.5).

    Returns ``{'aif_r': Pearson r, 'aif_peak_error': (est - true) / true peak height,
    'aif_ttp_error': time-to-peak difference in s, 'aif_fwhm_error': FWHM difference in s}``, each ``(n,)``.

    >>> t = np.arange(0.0, 10.0)
    >>> true = np.array([[0, 0, 1, 2, 4, 2, 1, 0, 0, 0.0]])
    >>> m = local_aif_metrics(np.roll(true, 1) * 1.5, true, t)
    >>> float(m["aif_peak_error"][0]), float(m["aif_ttp_error"][0]), float(m["aif_fwhm_error"][0])
    (0.5, 1.0, 0.0)
    """
    estimated = np.asarray(estimated, dtype=float)
    truth = np.asarray(truth, dtype=float)
    times = np.asarray(frame_times, dtype=float)
    true_peak = truth.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        peak_error = (estimated.max(axis=1) - true_peak) / true_peak
    return {
        "aif_r": pearson_rows(estimated, truth),
        "aif_peak_error": peak_error,
        "aif_ttp_error": times[np.argmax(estimated, axis=1)] - times[np.argmax(truth, axis=1)],
        "aif_fwhm_error": full_width_half_maximum(estimated, times) - full_width_half_maximum(truth, times),
    }


def summarize(records):
    """The paper's metrics of a set of per-curve records (dict of equal-length arrays).

    ``records`` holds ``cbf_true``, ``cbf_est``, ``delay_true``, ``delay_est``
    and optionally the :func:`local_aif_metrics` keys.

    >>> s = summarize({"cbf_true": np.array([10.0, 20.0]), "cbf_est": np.array([8.0, 22.0]),
    ...                "delay_true": np.zeros(2), "delay_est": np.array([1.0, -1.0])})
    >>> s["cbf_rmse"], s["delay_rmse"], s["cbf_ratio_mean"], round(s["cbf_ratio_sd"], 3)
    (2.0, 1.0, 0.95, 0.212)
    """
    truth = np.asarray(records["cbf_true"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(records["cbf_est"], dtype=float) / truth
    ratio = ratio[truth > 0]
    out = {
        "n": int(truth.size),
        "cbf_rmse": rmse(records["cbf_est"], truth),
        "delay_rmse": rmse(records["delay_est"], records["delay_true"]),
        "cbf_ratio_mean": float(np.mean(ratio)) if ratio.size else float("nan"),
        "cbf_ratio_sd": float(np.std(ratio, ddof=1)) if ratio.size > 1 else float("nan"),
    }
    for key in ("aif_r", "aif_peak_error", "aif_ttp_error", "aif_fwhm_error"):
        if key in records:
            values = np.asarray(records[key], dtype=float)
            values = values[np.isfinite(values)]
            out[f"{key}_mean"] = float(np.mean(values)) if values.size else float("nan")
            out[f"{key}_sd"] = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return out


# ----------------------------------------------------------------------------- evaluation over the test sets


@dataclass
class Evaluation:
    """Per-curve records of methods over test sets, and their summaries.

    ``records[method][set_number]`` is a dict of per-curve arrays: ``level``
    (the set's variable), ``cbf_true``, ``cbf_est``, ``delay_true``,
    ``delay_est`` and, for methods with a local AIF, the
    :func:`local_aif_metrics` keys.
    """

    records: dict = field(default_factory=dict)

    @property
    def methods(self):
        return list(self.records)

    @property
    def sets(self):
        numbers = {number for per_set in self.records.values() for number in per_set}
        return sorted(numbers)

    def summary(self, method, number):
        """Metrics of ``method`` on set ``number``."""
        return summarize(self.records[method][number])

    def pooled(self, method):
        """Metrics of ``method`` over all curves of all sets."""
        per_set = self.records[method]
        keys = set.intersection(*(set(r) for r in per_set.values())) - {"level"}
        return summarize({k: np.concatenate([per_set[n][k] for n in sorted(per_set)]) for k in keys})

    def mean_of_sets(self, method):
        """Metrics of ``method`` averaged over the sets (each set weighs the same)."""
        summaries = [self.summary(method, number) for number in sorted(self.records[method])]
        return {key: float(np.mean([s[key] for s in summaries])) for key in summaries[0]}

    def by_level(self, method, number):
        """``[(level, metrics), ...]`` of ``method`` on set ``number``, levels in Table 1's order."""
        records = self.records[method][number]
        out = []
        for level in TEST_SETS[number].levels if number in TEST_SETS else np.unique(records["level"]):
            picked = _level_mask(records["level"], level)
            if picked.any():
                out.append((level, summarize({k: v[picked] for k, v in records.items() if k != "level"})))
        return out


def _level_mask(levels, level):
    if isinstance(level, str):
        return np.asarray(levels).astype(str) == level
    return np.isclose(np.asarray(levels, dtype=float), float(level))


def evaluate(test_sets, methods=SVD_METHODS, options=None, progress=None):
    """Run ``methods`` over ``test_sets`` (``{number: [SimulatedCurves, ...]}``) and record per-curve errors.

    ``progress``, when given, is called with a line of text after each group.
    """
    evaluation = Evaluation({name: {} for name in methods})
    for number, groups in test_sets.items():
        spec = TEST_SETS[number]
        per_method = {name: [] for name in methods}
        for sim in groups:
            results = run_methods(methods, sim.global_aif, sim.tissue, sim.frame_times, options)
            for name, result in results.items():
                record = {
                    "level": curve_levels(spec, sim),
                    "cbf_true": np.asarray(sim.cbf, dtype=float),
                    "cbf_est": np.asarray(result["cbf"], dtype=float),
                    "delay_true": np.asarray(sim.delay, dtype=float),
                    "delay_est": np.asarray(result["delay"], dtype=float),
                }
                if result.get("local_aif") is not None:
                    record.update(local_aif_metrics(result["local_aif"], sim.local_aif, sim.frame_times))
                per_method[name].append(record)
            if progress is not None:
                progress(f"set #{number}: {sim.n_curves} curves at dt = {sim.frame_interval:g} s done")
        for name, records in per_method.items():
            keys = set.intersection(*(set(r) for r in records))
            evaluation.records[name][number] = {k: np.concatenate([r[k] for r in records]) for k in keys}
    return evaluation


# ----------------------------------------------------------------------------- tables

#: Columns of the summary tables: (key, header).
SUMMARY_COLUMNS = (
    ("cbf_rmse", "CBF RMSE (ml/100 g/min)"),
    ("delay_rmse", "delay RMSE (s)"),
    ("cbf_ratio", "CBF ratio est/true"),
    ("aif_r", "local AIF r"),
    ("aif_peak_error", "M_peak error (rel.)"),
    ("aif_ttp_error", "T_peak error (s)"),
    ("aif_fwhm_error", "FWHM error (s)"),
)


def summary_rows(evaluation):
    """One row per (set, method) and two overall rows per method: the mean of the sets and all curves pooled.

    Each row is a dict with ``set`` (``'#k <variable>'``, ``'mean of sets'`` or
    ``'all curves'``), ``method`` and the :func:`summarize` metrics.
    """
    rows = []
    for number in evaluation.sets:
        for method in evaluation.methods:
            if number in evaluation.records[method]:
                rows.append({"set": TEST_SETS[number].title, "method": method, **evaluation.summary(method, number)})
    for label, metrics in (("mean of sets", evaluation.mean_of_sets), ("all curves", evaluation.pooled)):
        for method in evaluation.methods:
            rows.append({"set": label, "method": method, **metrics(method)})
    return rows


def level_rows(evaluation):
    """One row per (set, level, method) with the :func:`summarize` metrics (the data of figures 4-5)."""
    rows = []
    for number in evaluation.sets:
        spec = TEST_SETS[number]
        for method in evaluation.methods:
            for level, metrics in evaluation.by_level(method, number):
                rows.append({"set": spec.number, "variable": spec.variable, "level": level, "method": method,
                             **metrics})
    return rows


def _cell(row, key):
    if key == "cbf_ratio":
        return f"{row['cbf_ratio_mean']:.2f} ± {row['cbf_ratio_sd']:.2f}"
    if key.startswith("aif_"):
        if f"{key}_mean" not in row:
            return "-"
        return f"{row[f'{key}_mean']:.2f} ± {row[f'{key}_sd']:.2f}"
    return f"{row[key]:.2f}"


def markdown_table(rows):
    """The summary rows as a markdown table in the paper's form (local AIF columns only when some method has them).

    >>> print(markdown_table([{"set": "#1 noise", "method": "ssvd", "n": 2, "cbf_rmse": 7.951,
    ...                        "delay_rmse": 3.07, "cbf_ratio_mean": 0.85, "cbf_ratio_sd": 0.13}]))
    | set | method | n | CBF RMSE (ml/100 g/min) | delay RMSE (s) | CBF ratio est/true |
    |---|---|---|---|---|---|
    | #1 noise | ssvd | 2 | 7.95 | 3.07 | 0.85 ± 0.13 |
    """
    with_aif = any("aif_r_mean" in row for row in rows)
    columns = [c for c in SUMMARY_COLUMNS if with_aif or not c[0].startswith("aif_")]
    lines = ["| set | method | n | " + " | ".join(header for _, header in columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    for row in rows:
        cells = [str(row["set"]), str(row["method"]), str(row["n"])] + [_cell(row, key) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "METHODS",
    "SVD_METHODS",
    "Evaluation",
    "deconvolve_svd_batch",
    "evaluate",
    "full_width_half_maximum",
    "local_aif_metrics",
    "pearson_rows",
    "register_method",
    "rmse",
    "run_methods",
    "summarize",
    "level_rows",
    "markdown_table",
    "summary_rows",
]
