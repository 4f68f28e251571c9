"""perfusion/convolution.py: the trapezoidal convolution against the Toeplitz matrix and the continuous
integral, circulant shift invariance, broadcasting."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.perfusion import (
    circulant_matrix,
    convolve,
    toeplitz_matrix,
)

from helpers import fine_grid_case


@settings(max_examples=40, deadline=None)
@given(
    aif=arrays(float, st.integers(3, 40), elements=st.floats(0, 500)),
    dt=st.floats(0.5, 2.0),
    data=st.data(),
)
def test_fft_convolution_equals_the_toeplitz_matrix(aif, dt, data):
    residue = data.draw(arrays(float, aif.size, elements=st.floats(0, 1)))
    np.testing.assert_allclose(convolve(aif, residue, dt), toeplitz_matrix(aif, dt) @ residue, atol=1e-7)


def test_trapezoid_convolution_matches_the_continuous_integral():
    # C = integral of Ca(t - s) K(s) with Ca = 1 and K = exp(-s / 4): 4 (1 - exp(-t / 4))
    t = np.arange(0, 30, 0.1)
    c = convolve(np.ones_like(t), np.exp(-t / 4), 0.1)
    np.testing.assert_allclose(c, 4 * (1 - np.exp(-t / 4)), rtol=1e-3, atol=1e-6)


def test_circulant_shift_invariance():
    aif, _, _ = fine_grid_case()
    n = aif.size
    matrix = circulant_matrix(aif, 1.0)
    assert matrix.shape == (2 * n, 2 * n)
    residue = np.zeros(2 * n)
    residue[:20] = np.exp(-np.arange(20) / 4)
    shifted = np.roll(residue, 5)
    np.testing.assert_allclose(matrix @ shifted, np.roll(matrix @ residue, 5), atol=1e-9)


def test_batched_convolution_broadcasts():
    aif, _, _ = fine_grid_case()
    residues = np.random.default_rng(0).random((4, aif.size))
    batched = convolve(aif, residues, 1.0)
    for row, residue in zip(batched, residues):
        np.testing.assert_allclose(row, convolve(aif, residue, 1.0))
