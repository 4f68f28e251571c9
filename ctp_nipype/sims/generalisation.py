"""The generalisation suite: curves that neither the network's training draws nor the paper's test sets hold.

The paper's six test sets (:mod:`.testsets`) vary one parameter at a time around settings close to the
training draws (an exponential residue, gamma-variate or Parker AIFs, 1 s frames over 80 s). This suite
asks what a user's scan may hold instead, one axis at a time around a broad base:

======================  ==================================================================================
axis                    levels
======================  ==================================================================================
residue shape           gamma of shape 0.5, 1, 3, 10, 100; a box-car with an exponential tail; two
                        compartments (bi-exponential)
CBF (ml/100 g/min)      5, 10, 20, 40, 60, 100
MTT (s)                 3, 4, 6, 8, 12, 16
delay (s)               0, 2, 4, 6, 8, 10, 12
T_A (s)                 0, 1, 2, 3, 4
AIF family              gamma variate, Parker, gamma with a delayed recirculation, two injections
frame interval (s)      1, 1.2, 1.5, 2
window (s)              45, 60, 75, 90 (delays 0-12 s: late curves are cut off)
SNR (dB)                noise free, 30, 20, 12, 6
======================  ==================================================================================

Base (every parameter not on the axis): CBF uniform in 10-80 ml/100 g/min, MTT uniform in 3-16 s, the
residue shape and the AIF family picked uniformly from their levels, delay uniform in 0-6 s, T_A uniform
in 0-2 s, 1.2 s frames over 72 s, 20 dB (the simulator's SNR: each curve's peak over the noise sd), AIF
stretched in time and value by factors in 0.7-1.3 and starting 3-8 s into the series (as the training
draws). Two AIF families (:data:`HELD_OUT_AIF_FAMILIES`) and two residue families are drawn by no
training recipe (``tests/test_generalisation.py`` checks it).

:func:`low_flow_cell` adds the issue's low-flow check: CBF 5-20, MTT 8-16 s, shapes 1, 3 and 100, with
the noise of a 5 mm clinical slice, i.e. a noise sd of a quarter of the peak enhancement that grey matter
(CBF 60, MTT 4 s, gamma shape 3) would have behind the same AIF.

The curves are built from the simulator's own building blocks (:mod:`.simulate`) on a 0.05 s grid: the
global AIF delayed (:func:`~.simulate.delay_curves`) and dispersed (:func:`~.simulate.disperse`),
convolved with ``K = (rho / kappa_H) CBF / 6000 r`` (trapezoidal rule) and sampled at the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..perfusion.constants import KAPPA_H, RHO
from .simulate import (
    AIF_PEAK_HU,
    GAMMA_AIF_SHAPE,
    SimulatedCurves,
    boxcar_exponential_residue,
    delay_curves,
    disperse,
    flow_scaled_residue,
    gamma_recirculation_aif,
    gamma_variate_aif,
    noise_sigma,
    parker_aif,
    residue_function,
    sample_curves,
    tissue_curves,
    two_compartment_residue,
    two_injection_aif,
)

#: fine simulation grid, s
SUITE_FINE_DT = 0.05
#: residue shapes: gamma shapes by number, the two non-gamma families by name
GAMMA_SHAPES = (0.5, 1.0, 3.0, 10.0, 100.0)
NON_GAMMA_RESIDUES = ("box-car + exp. tail", "two-compartment")
RESIDUE_SHAPES = tuple(f"gamma {a:g}" for a in GAMMA_SHAPES) + NON_GAMMA_RESIDUES
#: AIF families; the last two are drawn by no training recipe and no test set of the paper
AIF_FAMILIES = ("gamma", "parker", "gamma + recirculation", "two injections")
HELD_OUT_AIF_FAMILIES = AIF_FAMILIES[2:]

#: the axes and their levels, in the order of the tables
AXES = {
    "residue shape": RESIDUE_SHAPES,
    "CBF (ml/100 g/min)": (5.0, 10.0, 20.0, 40.0, 60.0, 100.0),
    "MTT (s)": (3.0, 4.0, 6.0, 8.0, 12.0, 16.0),
    "delay (s)": (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0),
    "T_A (s)": (0.0, 1.0, 2.0, 3.0, 4.0),
    "AIF family": AIF_FAMILIES,
    "frame interval (s)": (1.0, 1.2, 1.5, 2.0),
    "window (s)": (45.0, 60.0, 75.0, 90.0),
    "SNR (dB)": (np.inf, 30.0, 20.0, 12.0, 6.0),
}
#: the parameter each axis sets
AXIS_PARAMETER = {
    "residue shape": "residue_shape", "CBF (ml/100 g/min)": "cbf", "MTT (s)": "mtt", "delay (s)": "delay",
    "T_A (s)": "t_a", "AIF family": "aif_family", "frame interval (s)": "frame_interval",
    "window (s)": "window", "SNR (dB)": "snr_db",
}
#: the base draws: (low, high) uniform, a tuple of names picked uniformly, or a fixed value
BASE = {
    "cbf": (10.0, 80.0),
    "mtt": (3.0, 16.0),
    "residue_shape": RESIDUE_SHAPES,
    "delay": (0.0, 6.0),
    "t_a": (0.0, 2.0),
    "aif_family": AIF_FAMILIES,
    "frame_interval": 1.2,
    "window": 72.0,
    "snr_db": 20.0,
}
#: what the window axis draws for the delay instead of the base's, so that late curves are cut off
WINDOW_AXIS_DELAY = (0.0, 12.0)
#: the low-flow check of issue 28
LOW_FLOW = {"cbf": (5.0, 20.0), "mtt": (8.0, 16.0), "residue_shape": ("gamma 1", "gamma 3", "gamma 100"),
            "delay": (0.0, 6.0), "t_a": (0.0, 2.0), "aif_family": ("gamma", "parker"), "frame_interval": 1.2,
            "window": 72.0}
#: grey matter's curve sets the low-flow check's noise: its peak over the noise sd
GREY_MATTER = {"cbf": 60.0, "mtt": 4.0, "residue_shape": "gamma 3"}
GREY_MATTER_PEAK_OVER_NOISE = 4.0


@dataclass
class SuiteCell:
    """One cell of the suite: an axis, its level and the curves (``sim.alpha`` is NaN for non-gamma residues,
    ``sim.aif_type`` holds the AIF family), with each curve's residue shape by name."""

    axis: str
    level: object
    sim: SimulatedCurves
    residue_shape: np.ndarray

    @property
    def label(self):
        """The level as printed in the tables."""
        if isinstance(self.level, str):
            return self.level
        return "noise free" if np.isinf(self.level) else f"{self.level:g}"


def _draw(rng, spec, n):
    """Values for n curves: uniform in (low, high), picked among names, or fixed."""
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        return np.asarray(spec)[rng.integers(0, len(spec), n)]
    if isinstance(spec, tuple):
        return rng.uniform(spec[0], spec[1], n)
    return spec


def residue_curves(times, mtt, residue_shape):
    """``r(t)`` (``r(0) = 1``) for curves of named shapes (:data:`RESIDUE_SHAPES`), one row per curve."""
    mtt = np.asarray(mtt, dtype=float)
    shapes = np.asarray(residue_shape)
    out = np.empty((mtt.size, np.size(times)))
    for name in np.unique(shapes):
        rows = np.flatnonzero(shapes == name)
        if name == "box-car + exp. tail":
            out[rows] = boxcar_exponential_residue(times, mtt[rows]).reshape(rows.size, -1)
        elif name == "two-compartment":
            out[rows] = two_compartment_residue(times, mtt[rows]).reshape(rows.size, -1)
        elif name.startswith("gamma "):
            out[rows] = residue_function(times, mtt[rows], float(name.split()[1])).reshape(rows.size, -1)
        else:
            raise ValueError(f"Unknown residue shape {name!r}; choose from {RESIDUE_SHAPES}.")
    return out


def global_aifs(times, family, onset, time_scale, value_scale):
    """Global AIFs (HU above baseline) of named families (:data:`AIF_FAMILIES`), one row per curve."""
    family = np.asarray(family)
    out = np.empty((family.size, np.size(times)))
    peak = AIF_PEAK_HU * np.asarray(value_scale, dtype=float)
    onset, time_scale = np.asarray(onset, dtype=float), np.asarray(time_scale, dtype=float)
    for name in np.unique(family):
        rows = np.flatnonzero(family == name)
        if name == "gamma":
            curves = gamma_variate_aif(times, t0=onset[rows], alpha=np.full(rows.size, GAMMA_AIF_SHAPE["alpha"]),
                                       beta=GAMMA_AIF_SHAPE["beta"] * time_scale[rows], peak=peak[rows])
        elif name == "parker":
            curves = parker_aif(times, t0=onset[rows], peak=peak[rows], time_scale=time_scale[rows])
        elif name == "gamma + recirculation":
            curves = gamma_recirculation_aif(times, t0=onset[rows], peak=peak[rows], time_scale=time_scale[rows])
        elif name == "two injections":
            curves = two_injection_aif(times, t0=onset[rows], peak=peak[rows], time_scale=time_scale[rows])
        else:
            raise ValueError(f"Unknown AIF family {name!r}; choose from {AIF_FAMILIES}.")
        out[rows] = np.asarray(curves).reshape(rows.size, -1)
    return out


def simulate_suite_curves(n, rng, *, cbf, mtt, residue_shape, delay, t_a, aif_family, frame_interval, window,
                          snr_db=np.inf, aif_time_scale=None, aif_value_scale=None, aif_onset=None,
                          kappa_h=KAPPA_H, rho=RHO, fine_dt=SUITE_FINE_DT):
    """Curves of the suite's model for given parameters (scalars or one value per curve; names per curve).

    The AIF's time and value stretch (uniform in 0.7-1.3) and its onset (uniform in 3-8 s) are drawn
    unless given. Returns ``(SimulatedCurves, residue_shape)``.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n = int(n)

    def per_curve(value):
        return np.broadcast_to(np.asarray(value), (n,)).copy()

    cbf, mtt, delay, t_a, snr = (per_curve(v).astype(float) for v in (cbf, mtt, delay, t_a, snr_db))
    residue_shape, aif_family = per_curve(residue_shape).astype(str), per_curve(aif_family).astype(str)
    time_scale = rng.uniform(0.7, 1.3, n) if aif_time_scale is None else per_curve(aif_time_scale).astype(float)
    value_scale = rng.uniform(0.7, 1.3, n) if aif_value_scale is None else per_curve(aif_value_scale).astype(float)
    onset = rng.uniform(3.0, 8.0, n) if aif_onset is None else per_curve(aif_onset).astype(float)
    frame_times = np.arange(int(np.floor(window / frame_interval + 1e-9))) * float(frame_interval)
    fine = np.arange(int(np.ceil(frame_times[-1] / fine_dt)) + 2) * fine_dt
    aif_fine = global_aifs(fine, aif_family, onset, time_scale, value_scale)
    local_fine = disperse(delay_curves(aif_fine, fine_dt, delay), fine_dt, t_a)
    residue_fine = residue_curves(fine, mtt, residue_shape)
    tissue_fine = tissue_curves(local_fine, flow_scaled_residue(residue_fine, cbf, kappa_h, rho), fine_dt)
    clean = sample_curves(tissue_fine, fine_dt, frame_times)
    sigma = np.where(np.isinf(snr), 0.0, noise_sigma(clean.max(axis=1), np.where(np.isinf(snr), 0.0, snr)))
    tissue = clean + sigma[:, None] * rng.standard_normal(clean.shape)
    alpha = np.array([float(s.split()[1]) if s.startswith("gamma ") else np.nan for s in residue_shape])
    sim = SimulatedCurves(
        frame_times=frame_times,
        global_aif=sample_curves(aif_fine, fine_dt, frame_times).astype(np.float32),
        local_aif=sample_curves(local_fine, fine_dt, frame_times).astype(np.float32),
        tissue=tissue.astype(np.float32),
        tissue_clean=clean.astype(np.float32),
        residue=sample_curves(flow_scaled_residue(residue_fine, cbf, kappa_h, rho), fine_dt,
                              frame_times).astype(np.float32),
        cbf=cbf, cbv=cbf * mtt / 60.0, mtt=mtt, alpha=alpha, delay=delay, t_a=t_a, snr_db=snr,
        noise_sigma=sigma, aif_type=aif_family, aif_time_scale=time_scale, aif_value_scale=value_scale,
        aif_onset=onset,
    )
    return sim, residue_shape


def _cell_parameters(axis, level, rng, n):
    parameters = {name: _draw(rng, spec, n) for name, spec in BASE.items()}
    if axis == "window (s)":
        parameters["delay"] = _draw(rng, WINDOW_AXIS_DELAY, n)
    parameters[AXIS_PARAMETER[axis]] = level
    return parameters


def make_suite(n_per_cell=500, seed=2028, axes=None):
    """The suite's cells (:class:`SuiteCell`), ``n_per_cell`` curves each, reproducible from ``seed``.

    ``axes`` (names of :data:`AXES`) picks some axes; default all.
    """
    axes = list(AXES) if axes is None else list(axes)
    unknown = [axis for axis in axes if axis not in AXES]
    if unknown:
        raise ValueError(f"Unknown suite axis/axes {unknown}; choose from {list(AXES)}.")
    if int(n_per_cell) < 1:
        raise ValueError(f"n_per_cell must be at least 1, got {n_per_cell}.")
    cells = []
    for axis in axes:
        axis_index = list(AXES).index(axis)
        for level_index, level in enumerate(AXES[axis]):
            rng = np.random.default_rng([int(seed), axis_index, level_index])
            sim, shapes = simulate_suite_curves(n_per_cell, rng, **_cell_parameters(axis, level, rng, n_per_cell))
            cells.append(SuiteCell(axis, level, sim, shapes))
    return cells


def low_flow_cell(n=500, seed=2029, peak_over_noise=GREY_MATTER_PEAK_OVER_NOISE):
    """The low-flow check (module docstring): one :class:`SuiteCell` on the axis ``'low flow'``.

    Each curve's noise sd is grey matter's peak enhancement behind the same AIF (noise free, undelayed,
    undispersed) divided by ``peak_over_noise``.
    """
    rng = np.random.default_rng(int(seed))
    parameters = {name: _draw(rng, spec, n) for name, spec in LOW_FLOW.items()}
    parameters.update(aif_time_scale=rng.uniform(0.7, 1.3, n), aif_value_scale=rng.uniform(0.7, 1.3, n),
                      aif_onset=rng.uniform(3.0, 8.0, n))
    sim, shapes = simulate_suite_curves(n, rng, **parameters)
    grey, _ = simulate_suite_curves(n, rng, **{**parameters, **GREY_MATTER, "delay": 0.0, "t_a": 0.0})
    sigma = grey.tissue_clean.max(axis=1) / float(peak_over_noise)
    noise = rng.standard_normal(sim.tissue.shape)
    sim = replace(sim, tissue=(sim.tissue_clean + sigma[:, None] * noise).astype(np.float32), noise_sigma=sigma,
                  snr_db=20 * np.log10(sim.tissue_clean.max(axis=1) / sigma))
    return SuiteCell("low flow", f"CBF 5-20, MTT 8-16 s, GM peak = {peak_over_noise:g} noise sd", sim, shapes)
