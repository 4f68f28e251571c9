"""Shared fixtures: the analytic fine-grid case (``helpers.fine_grid_case``) and the session's phantoms."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from helpers import fine_grid_case

# In CI every run draws the same hypothesis examples: a failure there reproduces, and a green main does not
# turn red on a new random draw. Locally the draws stay random (and the failures found are kept and replayed).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def case():
    return fine_grid_case


@pytest.fixture(scope="session")
def clean_small_phantom():
    """``make_phantom("small", seed=0, noise_sd_hu=0)``, built once per session: treat it as read-only."""
    from ctp_nipype.sims.phantom import make_phantom

    return make_phantom("small", seed=0, noise_sd_hu=0)
