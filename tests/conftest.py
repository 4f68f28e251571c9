"""Shared fixtures: analytic truth computed on a fine grid, independent of the methods' discretisation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings
from scipy.special import gammainc

from ctp_nipype.perfusion.constants import KAPPA_H, RHO

# In CI every run draws the same hypothesis examples: a failure there reproduces, and a green main does not
# turn red on a new random draw. Locally the draws stay random (and the failures found are kept and replayed).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def fine_grid_case(
    cbf=60.0,
    mtt=4.0,
    delay=0.0,
    alpha=1.0,
    dt=1.0,
    duration=90.0,
    kappa_h=KAPPA_H,
    rho=RHO,
    peak=400.0,
    fine=0.01,
):
    """Noise-free AIF and tissue curve from a continuous convolution on a fine grid.

    The AIF is a gamma variate (arrival 10 s, peak 4.5 s later); the residue
    ``r(t) = 1 - GammaCDF(t - delay; alpha, mtt / alpha)``, zero before ``delay``;
    the tissue ``C = Ca (x) (rho / kappa_H) CBF / 6000 r`` integrated at
    ``fine`` seconds, then sampled every ``dt``. Returns (aif, tissue, frame_times).
    """
    t_fine = np.arange(0.0, duration, fine)
    x = np.clip(t_fine - 10.0, 0.0, None)
    aif = peak * (x / 4.5) ** 3 * np.exp(-(x - 4.5) / 1.5)
    shifted = np.clip(t_fine - delay, 0.0, None)
    residue = 1.0 - gammainc(alpha, shifted / (mtt / alpha))
    residue[t_fine < delay] = 0.0
    flow_residue = (rho / kappa_h) * cbf / 6000.0 * residue
    tissue = np.convolve(aif, flow_residue)[: t_fine.size] * fine
    step = int(round(dt / fine))
    frame_times = t_fine[::step]
    return aif[::step], tissue[::step], frame_times


@pytest.fixture
def case():
    return fine_grid_case


@pytest.fixture(scope="session")
def clean_small_phantom():
    """``make_phantom("small", seed=0, noise_sd_hu=0)``, built once per session: treat it as read-only."""
    from ctp_nipype.sims.phantom import make_phantom

    return make_phantom("small", seed=0, noise_sd_hu=0)
