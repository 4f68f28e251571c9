"""perfusion.maps: the conventions' formulas, checked against analytic residues and invariances."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ctp_nipype.perfusion.constants import KAPPA_H, RHO
from ctp_nipype.perfusion.convolution import convolve
from ctp_nipype.perfusion.maps import (
    cbf_from_residue,
    cbv_from_areas,
    curve_area,
    mtt_from_cbv_cbf,
    perfusion_maps,
)


@settings(max_examples=30, deadline=None)
@given(cbf=st.floats(5.0, 120.0), mtt=st.floats(2.0, 12.0), dt=st.sampled_from([0.5, 1.0, 1.5]))
def test_an_exact_residue_gives_back_cbf_cbv_and_mtt(cbf, mtt, dt):
    """K = (rho / kappa_H) CBF / 6000 exp(-t / MTT) and C = Ca (x) K (the trapezoidal convolution): the maps
    return CBF exactly and CBV = 100 kappa_H / rho * trapezoid(K) (the discrete identity, the window holding the
    whole curve), which is the truth up to the trapezoid's error on the sampled exponential (+2.1% at
    dt / MTT = 0.5)."""
    t = np.arange(0.0, 150.0, dt)
    x = np.clip(t - 8.0, 0, None)
    aif = 400 * (x / 4.5) ** 3 * np.exp(-(x - 4.5) / 1.5)
    residue = (RHO / KAPPA_H) * cbf / 6000.0 * np.exp(-t / mtt)
    tissue = convolve(aif, residue, dt)
    maps = perfusion_maps(residue[None], curve_area(tissue[None], dt), curve_area(aif, dt), dt)
    assert maps.cbf[0] == pytest.approx(cbf, rel=1e-12)
    assert maps.cbv[0] == pytest.approx(100 * KAPPA_H / RHO * curve_area(residue, dt), rel=1e-4)
    sampling = (dt / mtt) ** 2 / 12  # the trapezoid's relative error on exp(-t / MTT)
    assert maps.cbv[0] == pytest.approx(cbf * mtt / 60.0, rel=1.05 * sampling + 1e-4)
    assert maps.mtt[0] == pytest.approx(mtt, rel=1.05 * sampling + 1e-4)
    assert maps.tmax[0] == 0.0 and maps.usable[0]


@settings(max_examples=50, deadline=None)
@given(
    residue=arrays(np.float64, (4, 12), elements=st.floats(-0.05, 0.05, allow_subnormal=False)),
    area=arrays(np.float64, (4,), elements=st.floats(-50.0, 50.0, allow_subnormal=False)),
    scale=st.floats(0.1, 10.0),
)
def test_mtt_is_never_negative_and_the_maps_scale_with_the_curve(residue, area, scale):
    maps = perfusion_maps(residue, area, 100.0, 1.0)
    assert np.all(maps.mtt >= 0) and np.all(maps.cbf >= 0)
    assert np.all(maps.cbf[~maps.usable] == 0) and np.all(maps.cbv[~maps.usable] == 0)
    scaled = perfusion_maps(scale * residue, scale * area, 100.0, 1.0)
    np.testing.assert_allclose(scaled.cbf, scale * maps.cbf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaled.cbv, scale * maps.cbv, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaled.mtt, maps.mtt, rtol=1e-9, atol=1e-12)


def test_the_constants_enter_once_and_torch_gives_the_same_cbf():
    k = np.array([[0.0, 0.02, 0.01]])
    assert cbf_from_residue(k)[0] / cbf_from_residue(k, kappa_h=1.0, rho=1.0)[0] == pytest.approx(KAPPA_H / RHO)
    assert cbv_from_areas(4.0, 100.0)[()] == pytest.approx(4.0 * KAPPA_H / RHO)
    np.testing.assert_allclose(cbf_from_residue(torch.tensor(k)).numpy(), cbf_from_residue(k))
    assert mtt_from_cbv_cbf(np.array([-1.0, 2.0]), np.array([10.0, 0.0])).tolist() == [0.0, 0.0]
