"""The six simulated test sets of Zeng et al. (2025), Table 1.

Every set shares the settings of the table: a global AIF of either shape
(Parker or gamma variate, half of the curves each), CBV = 4 ml/100 g, MTT
uniform in [3.43, 24] s (so CBF = 60 * CBV / MTT, from 10 to 70 ml/100 g/min),
an exponential residue (alpha = 1), a delay uniform in [0, 25] s, frames every
1 s over T = 80 s, no dispersion (T_A = 0) and SNR = 20 dB, except for the
set's own variable, which takes the listed levels in equal shares:

===  ===================  ====================================
set  variable             levels
===  ===================  ====================================
#1   SNR (dB)             5, 7, 10, 15, 20, 25, 30
#2   delay (s)            0, 1, ..., 10
#3   T_A (s)              0, 1, 2, 3, 4, 5
#4   frame interval (s)   1, 1.1, 1.3, 1.6, 2
#5   AIF type             Parker, gamma
#6   alpha                1 (exponential), 100 (box-car)
===  ===================  ====================================

The AIF is stretched in time and value by independent factors in [0.7, 1.3]
and starts after a pre-bolus baseline (the simulator's defaults, section 2.3).
A set is a list of :class:`~ctp_nipype.sims.simulate.SimulatedCurves`,
one per frame grid: one for all sets but #4, which has one per frame interval.
Frames run from 0 to below T: ``ceil(T / dt)`` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .simulate import AIF_TYPES, TRAINING_RANGES, SimulatedCurves, simulate_curves

#: Curves per set in the paper.
N_CURVES = 10_000
#: CBV of every test curve, ml/100 g ("4%", normal grey matter).
TEST_CBV = 4.0
#: Total duration of the test series, s.
TEST_DURATION = 80.0
#: The common settings of Table 1 (a set's variable overrides its own entry).
COMMON_SETTINGS = {
    "mtt": (3.43, 24.0),
    "alpha": 1.0,
    "delay": (0.0, 25.0),
    "frame_interval": 1.0,
    "t_a": 0.0,
    "snr_db": 20.0,
    "aif_type": ("parker", "gamma"),
}


@dataclass(frozen=True)
class TestSetSpec:
    """One row of Table 1: the set's number, its variable and that variable's levels."""

    __test__ = False  # not a pytest class

    number: int
    variable: str
    label: str
    levels: tuple
    unit: str = ""

    @property
    def title(self):
        return f"#{self.number} {self.label}"


#: Table 1; ``variable`` is the :class:`SimulatedCurves` attribute that holds each curve's level.
TEST_SETS = {
    1: TestSetSpec(1, "snr_db", "noise (SNR)", (5.0, 7.0, 10.0, 15.0, 20.0, 25.0, 30.0), "dB"),
    2: TestSetSpec(2, "delay", "delay", tuple(float(d) for d in range(11)), "s"),
    3: TestSetSpec(3, "t_a", "dispersion (T_A)", (0.0, 1.0, 2.0, 3.0, 4.0, 5.0), "s"),
    4: TestSetSpec(4, "frame_interval", "frame interval", (1.0, 1.1, 1.3, 1.6, 2.0), "s"),
    5: TestSetSpec(5, "aif_type", "AIF type", ("parker", "gamma")),
    6: TestSetSpec(6, "alpha", "residue shape (alpha)", (1.0, 100.0)),
}


def level_counts(n_curves, n_levels):
    """Equal shares of ``n_curves`` over ``n_levels`` (the first ones get the remainder).

    >>> level_counts(10_000, 7)
    [1429, 1429, 1429, 1429, 1428, 1428, 1428]
    """
    base, extra = divmod(int(n_curves), int(n_levels))
    return [base + (1 if i < extra else 0) for i in range(int(n_levels))]


def n_frames_for(frame_interval, duration=TEST_DURATION):
    """Frames at ``0, dt, ...`` below ``duration``.

    >>> [n_frames_for(dt) for dt in (1.0, 1.1, 1.3, 1.6, 2.0)]
    [80, 73, 62, 50, 40]
    """
    return int(math.ceil(duration / frame_interval - 1e-9))


def _balanced(values, n, rng):
    """``n`` values taking each of ``values`` in equal shares, in random order."""
    counts = level_counts(n, len(values))
    out = np.repeat(np.asarray(values, dtype=object), counts)
    return out[rng.permutation(n)]


def make_test_set(number, n_curves=N_CURVES, seed=None, **simulate_kwargs):
    """Simulate test set ``number`` (1-6) of Table 1.

    Parameters
    ----------
    number : int
        The set, 1 to 6.
    n_curves : int
        Curves in the set (the paper: 10,000), shared equally by the levels
        of the set's variable and by the two AIF types.
    seed : int, optional
        Default ``2025 + number``: the same set every time.
    **simulate_kwargs
        Passed on to :func:`~ctp_nipype.sims.simulate.simulate_curves`
        (for example ``workers``).

    Returns
    -------
    list of SimulatedCurves
        One per frame grid.

    Examples
    --------
    >>> groups = make_test_set(4, n_curves=10)
    >>> [(g.frame_interval, g.n_frames, g.n_curves) for g in groups]
    [(1.0, 80, 2), (1.1, 73, 2), (1.3, 62, 2), (1.6, 50, 2), (2.0, 40, 2)]
    >>> sim = make_test_set(2, n_curves=22)[0]
    >>> sorted(set(sim.delay.tolist())) == [float(d) for d in range(11)], bool(np.allclose(sim.cbv, 4.0))
    (True, True)
    """
    if number not in TEST_SETS:
        raise ValueError(f"Unknown test set {number!r}; Table 1 has sets {sorted(TEST_SETS)}.")
    spec = TEST_SETS[number]
    if int(n_curves) != n_curves or n_curves < len(spec.levels):
        raise ValueError(f"Set #{number} needs at least {len(spec.levels)} curves (one per level), got {n_curves}.")
    rng = np.random.default_rng(2025 + number if seed is None else seed)
    if spec.variable == "frame_interval":
        counts = level_counts(n_curves, len(spec.levels))
        return [_simulate_group(count, rng, {"frame_interval": dt}, simulate_kwargs)
                for count, dt in zip(counts, spec.levels)]
    levels = _balanced(spec.levels, int(n_curves), rng)
    return [_simulate_group(int(n_curves), rng, {spec.variable: levels}, simulate_kwargs)]


def _simulate_group(n, rng, overrides, simulate_kwargs):
    """Curves with the common settings of Table 1, ``overrides`` replacing some."""
    settings = dict(COMMON_SETTINGS, **overrides)
    for name in ("mtt", "delay"):
        low, high = settings[name] if isinstance(settings[name], tuple) else (None, None)
        if low is not None:
            settings[name] = rng.uniform(low, high, n)
    if isinstance(settings["aif_type"], tuple):
        settings["aif_type"] = _balanced(settings["aif_type"], n, rng)
    settings["aif_type"] = np.asarray(settings["aif_type"], dtype=str)
    for name in ("alpha", "t_a", "snr_db"):
        settings[name] = np.asarray(settings[name], dtype=float)
    mtt = settings.pop("mtt")
    frame_interval = settings.pop("frame_interval")
    return simulate_curves(
        n,
        rng,
        TRAINING_RANGES,
        frame_interval=frame_interval,
        n_frames=n_frames_for(frame_interval),
        mtt=mtt,
        cbf=60.0 * TEST_CBV / mtt,
        **settings,
        **simulate_kwargs,
    )


def make_test_sets(numbers=tuple(TEST_SETS), n_curves=N_CURVES, seed=None, **simulate_kwargs):
    """The chosen sets as ``{number: [SimulatedCurves, ...]}`` (seed ``None``: each set's default;
    an integer ``s``: set ``k`` uses ``s + k``)."""
    return {
        number: make_test_set(number, n_curves, None if seed is None else int(seed) + number, **simulate_kwargs)
        for number in numbers
    }


def curve_levels(spec, sim):
    """Each curve's level of the set's variable, shape ``(n,)`` (the frame interval is per group)."""
    if spec.variable == "frame_interval":
        return np.full(sim.n_curves, round(sim.frame_interval, 6))
    return np.asarray(getattr(sim, spec.variable))


__all__ = [
    "AIF_TYPES",
    "COMMON_SETTINGS",
    "N_CURVES",
    "TEST_CBV",
    "TEST_DURATION",
    "TEST_SETS",
    "SimulatedCurves",
    "TestSetSpec",
    "curve_levels",
    "level_counts",
    "make_test_set",
    "make_test_sets",
    "n_frames_for",
]
