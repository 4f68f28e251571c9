"""The curve simulator against physics: constants, residue, dispersion, delay, noise, seeds; and the dataset."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctp_nipype.nn import dataset
from ctp_nipype.perfusion.constants import KAPPA_H, RHO
from ctp_nipype.perfusion.convolution import convolve, trapezoid_integral
from ctp_nipype.sims.simulate import (
    AIF_PEAK_HU,
    TRAINING_RANGES,
    SimulationRanges,
    delay_curves,
    disperse,
    flow_scaled_residue,
    gamma_variate_aif,
    parker_aif,
    residue_function,
    residue_on_grid,
    sample_curves,
    simulate_curves,
    vtf_kernel,
)
from ctp_nipype.perfusion.svd import SVDModel

FLOW_PER_CBF = (RHO / KAPPA_H) / 6000.0  # K(0) in 1/s per ml/100 g/min


def noise_free(n, seed=0, **kwargs):
    settings_ = dict(frame_interval=1.0, n_frames=120, snr_db=np.inf)
    settings_.update(kwargs)
    return simulate_curves(n, seed, **settings_)


@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd"])
def test_noise_free_curves_deconvolve_to_their_true_cbv(method):
    """CBV of the SVD family (area ratio with kappa_H / rho) equals CBF * MTT / 60 within 1%.

    Gamma-variate AIFs and a 120 s window hold the whole passage; a constant lost
    or doubled between simulator and deconvolution would show as a 27% error.
    """
    sim = noise_free(12, seed=1, aif_type="gamma", mtt=np.linspace(3.5, 12, 12), delay=np.linspace(0, 8, 12),
                     t_a=np.linspace(0, 3, 12), alpha=np.geomspace(0.7, 50, 12))
    cbv = np.array([SVDModel(sim.global_aif[i], sim.frame_times, method).fit(sim.tissue[i : i + 1]).cbv[0]
                    for i in range(sim.n_curves)])
    np.testing.assert_allclose(cbv, sim.cbv, rtol=0.01)
    np.testing.assert_allclose(sim.cbv, sim.cbf * sim.mtt / 60.0)


def test_batch_simulator_matches_building_blocks_on_a_finer_grid():
    """simulate_curves (0.1 s grid, spectra shared) agrees with the building blocks at 0.01 s to 0.1%."""
    sim = simulate_curves(4, 7, frame_interval=1.3, n_frames=60, snr_db=np.inf,
                          aif_type=["gamma", "parker", "gamma", "parker"], alpha=[0.6, 1.0, 20.0, 90.0],
                          t_a=[0.0, 1.5, 3.0, 4.0], delay=[0.0, 3.3, 12.0, 24.0])
    h = 0.01
    t = np.arange(0, sim.frame_times[-1] + 1, h)
    aif = np.zeros((4, t.size))
    g, p = [0, 2], [1, 3]
    aif[g] = gamma_variate_aif(t, t0=sim.aif_onset[g], alpha=[3.0, 3.0], beta=1.5 * sim.aif_time_scale[g],
                               peak=AIF_PEAK_HU * sim.aif_value_scale[g])
    aif[p] = parker_aif(t, t0=sim.aif_onset[p], peak=AIF_PEAK_HU * sim.aif_value_scale[p],
                        time_scale=sim.aif_time_scale[p])
    local = disperse(delay_curves(aif, h, sim.delay), h, sim.t_a)
    flow_residue = flow_scaled_residue(residue_function(t, sim.mtt, sim.alpha), sim.cbf)
    tissue = convolve(local, flow_residue, h)
    for reference, simulated in ((aif, sim.global_aif), (local, sim.local_aif), (tissue, sim.tissue_clean),
                                 (flow_residue, sim.residue)):
        expected = sample_curves(reference, h, sim.frame_times)
        scale = np.abs(expected).max(axis=1, keepdims=True)
        np.testing.assert_array_less(np.abs(simulated - expected) / scale, 1e-3)


@settings(max_examples=25, deadline=None)
@given(mtt=st.floats(3.43, 24.0), alpha=st.floats(0.5, 100.0), cbf=st.floats(0.0, 200.0))
def test_flow_scaled_residue_starts_at_cbf_and_decreases(mtt, alpha, cbf):
    sim = simulate_curves(1, 0, frame_interval=1.0, n_frames=50, mtt=mtt, alpha=alpha, cbf=cbf, snr_db=np.inf)
    k = sim.residue[0].astype(float)
    # r(0) = 1: K(0) holds the CBF with the constants of the conventions (a lost kappa_H is 27%)
    assert k[0] == pytest.approx(FLOW_PER_CBF * cbf, rel=1e-6, abs=1e-12)
    assert np.all(np.diff(k) <= 1e-9)
    assert np.all(k >= 0)


@settings(max_examples=25, deadline=None)
@given(mtt=st.floats(3.43, 24.0), alpha=st.floats(0.5, 100.0))
def test_residue_area_is_the_mtt(mtt, alpha):
    """integral(r) = MTT, so integral(K) = (rho / kappa_H) * CBF / 6000 * MTT; and the fast grid agrees with gammainc."""
    h = 0.1
    r = residue_on_grid([mtt], [alpha], h, 6000)[0].astype(float)
    tail = np.ravel(residue_function(600.0, mtt, alpha))[0]  # what lies beyond the 600 s window
    assert trapezoid_integral(r, h) == pytest.approx(mtt, abs=0.5 * h + 600 * tail + 2e-3)
    exact = residue_function(np.arange(6000) * h, mtt, alpha)
    np.testing.assert_allclose(r, exact, atol=2e-3)


def test_residue_on_grid_short_grids_and_a_given_buffer():
    """Every sample is written (the batch simulator hands in an uninitialised buffer), r(0) = 1."""
    for n_samples in (1, 2, 3):
        out = np.full((3, n_samples), np.nan, np.float32)
        r = residue_on_grid([4.0, 4.0, 4.0], [1.0, 0.7, 30.0], 0.1, n_samples, out=out)
        assert r is out and np.all(np.isfinite(r)) and np.all(r[:, 0] == 1.0)
        np.testing.assert_allclose(r, residue_function(np.arange(n_samples) * 0.1, [4.0] * 3, [1.0, 0.7, 30.0]),
                                   atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(t_a=st.floats(0.0, 6.0), delay=st.floats(0.0, 20.0), width=st.floats(1.0, 8.0))
@example(t_a=0.03125, delay=0.0, width=1.0)  # T_A below the step: trapezoidal weights gave a mean of 0.021 s
@example(t_a=0.01, delay=3.7, width=2.0)
def test_dispersion_preserves_area_and_delay_shifts(t_a, delay, width):
    h = 0.05
    t = np.arange(0, 200, h)
    curve = gamma_variate_aif(t, t0=5.0, alpha=3.0, beta=width / 3, peak=300.0)
    moved = disperse(delay_curves(curve, h, delay), h, t_a)[0]
    assert trapezoid_integral(moved, h) == pytest.approx(trapezoid_integral(curve, h), rel=1e-6)
    # the centre of mass moves by delay + T_A (the mean of the exponential kernel)
    centre = trapezoid_integral(t * curve, h) / trapezoid_integral(curve, h)
    moved_centre = trapezoid_integral(t * moved, h) / trapezoid_integral(moved, h)
    assert moved_centre - centre == pytest.approx(delay + t_a, abs=0.01)


def test_vtf_kernel_sums_to_one_and_t_a_zero_is_identity():
    kernel = vtf_kernel([0.0, 0.5, 4.0], 0.1, 2000)
    np.testing.assert_allclose(kernel.sum(axis=1), 1.0)
    assert kernel[0, 0] == 1.0 and not kernel[0, 1:].any()
    with pytest.raises(ValueError, match="T_A"):
        vtf_kernel([-1.0], 0.1, 10)


def test_local_aif_is_the_global_aif_delayed_and_dispersed():
    sim = noise_free(6, seed=3, t_a=0.0, delay=[0, 1, 2, 5, 10, 20])
    for i, shift in enumerate([0, 1, 2, 5, 10, 20]):
        np.testing.assert_allclose(sim.local_aif[i, shift:], sim.global_aif[i, : sim.n_frames - shift],
                                   atol=1e-4 * sim.global_aif[i].max())
        assert not sim.local_aif[i, :shift].any()
    dispersed = noise_free(2, seed=3, delay=0.0, t_a=[2.0, 4.0], aif_type="gamma")  # back to baseline in the window
    dt = dispersed.frame_interval
    np.testing.assert_allclose(trapezoid_integral(dispersed.local_aif, dt),
                               trapezoid_integral(dispersed.global_aif, dt), rtol=0.003)
    assert np.all(dispersed.local_aif.max(axis=1) < dispersed.global_aif.max(axis=1))


def test_tissue_moves_with_the_delay():
    common = dict(aif_type="gamma", aif_time_scale=1.0, aif_value_scale=1.0, aif_onset=5.0, mtt=6.0, cbf=50.0,
                  alpha=1.0, t_a=1.0)
    early = noise_free(1, seed=0, delay=0.0, **common)
    late = noise_free(1, seed=0, delay=7.0, **common)
    np.testing.assert_allclose(late.tissue[0, 7:], early.tissue[0, :-7], rtol=1e-5, atol=1e-5)


def test_same_seed_same_curves_whatever_the_chunking():
    a = simulate_curves(300, 42)
    b = simulate_curves(300, np.random.default_rng(42), chunk_size=64, workers=2)
    for name in ("frame_times", "global_aif", "local_aif", "tissue", "residue", "cbf", "delay", "aif_type"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = simulate_curves(300, 43)
    assert not np.array_equal(a.tissue[:, :10], c.tissue[:, :10]) or a.n_frames != c.n_frames


def test_snr_definition_is_peak_over_noise_sigma():
    """SNR_dB = 20 log10(peak of the clean tissue curve / noise sigma), measured."""
    for snr in (5.0, 20.0):
        sim = simulate_curves(400, 5, frame_interval=1.0, n_frames=100, snr_db=snr)
        noise = (sim.tissue - sim.tissue_clean) / sim.tissue_clean.max(axis=1, keepdims=True)
        measured = 20 * np.log10(1.0 / noise.std())
        assert measured == pytest.approx(snr, abs=0.15)
        np.testing.assert_allclose(sim.noise_sigma, sim.tissue_clean.max(axis=1) / 10 ** (snr / 20), rtol=1e-5)
        assert abs(noise.mean()) < 0.01  # zero mean
    assert not simulate_curves(5, 0, snr_db=np.inf).noise_sigma.any()


def test_draws_follow_the_training_ranges():
    sim = simulate_curves(4000, 11)
    r = TRAINING_RANGES
    for name in ("snr_db", "cbf", "mtt", "alpha", "delay", "aif_time_scale", "aif_value_scale", "aif_onset"):
        values = getattr(sim, name)
        low, high = getattr(r, name)
        assert values.min() >= low and values.max() <= high, name
        assert values.min() < low + 0.02 * (high - low) and values.max() > high - 0.02 * (high - low), name
    dispersed = sim.t_a[sim.t_a > 0]
    assert dispersed.min() >= 1.0 and dispersed.max() <= 4.0
    assert np.mean(sim.t_a == 0) == pytest.approx(r.t_a_zero_fraction, abs=0.03)
    assert set(sim.aif_type) == {"gamma", "parker"}
    assert np.mean(sim.aif_type == "gamma") == pytest.approx(0.5, abs=0.03)
    # realistic CT amplitudes and a pre-bolus baseline
    peaks = sim.global_aif.max(axis=1)
    assert peaks.min() > 0.6 * AIF_PEAK_HU and peaks.max() < 1.35 * AIF_PEAK_HU
    assert not sim.global_aif[:, sim.frame_times < 3.0].any()
    grids = [simulate_curves(2, seed) for seed in range(30)]
    assert all(1.0 <= g.frame_interval <= 2.0 and 45 <= g.n_frames <= 120 for g in grids)
    assert len({g.n_frames for g in grids}) > 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_curves=0), "n_curves"),
        (dict(aif_type="cosine"), "Unknown AIF type"),
        (dict(fine_dt=0.5), "fine_dt"),
        (dict(mtt=-1.0), "mtt"),
        (dict(cbf=[1.0, 2.0]), "one value per curve"),
        (dict(frame_interval=0.05), "frame_interval"),
    ],
)
def test_bad_input_is_refused_early(kwargs, message):
    arguments = dict(n_curves=3, rng=0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        simulate_curves(**arguments)


def test_ranges_are_checked():
    with pytest.raises(ValueError, match="cbf"):
        SimulationRanges(cbf=(10.0, 5.0))
    with pytest.raises(ValueError, match="aif_types"):
        SimulationRanges(aif_types=("box",))


# ----------------------------------------------------------------------------- the training dataset


class _Worker:
    def __init__(self, worker_id, num_workers):
        self.id, self.num_workers = worker_id, num_workers


def test_stream_yields_float32_batches_of_one_grid_each():
    stream = dataset.SimulatedCurveStream(batch_size=16, seed=4, n_batches=4, batches_per_grid=2)
    batches = list(stream)
    assert len(batches) == 4
    for batch in batches:
        n_frames = batch["frame_times"].shape[0]
        for key in dataset.CURVE_KEYS:
            assert batch[key].dtype == torch.float32 and batch[key].shape == (16, n_frames)
        assert batch["bad"].shape == (16,) and torch.equal(batch["bad"], batch["delay"])
    assert torch.equal(batches[0]["frame_times"], batches[1]["frame_times"])  # two batches per grid
    assert [b["tissue"].shape for b in batches] == [b["tissue"].shape for b in stream]  # reproducible


def test_workers_draw_different_reproducible_streams(monkeypatch):
    stream = dataset.SimulatedCurveStream(batch_size=8, seed=9, n_batches=5)
    seen = {}
    for worker in (0, 1):
        monkeypatch.setattr(dataset, "get_worker_info", lambda w=worker: _Worker(w, 2))
        seen[worker] = [b["tissue"] for b in stream]
    assert len(seen[0]) + len(seen[1]) == 5  # the epoch's batches are shared out
    assert not torch.equal(seen[0][0][:, :10], seen[1][0][:, :10])
    stream.set_epoch(1)
    monkeypatch.setattr(dataset, "get_worker_info", lambda: _Worker(0, 2))
    assert not torch.equal(next(iter(stream))["tissue"][:, :10], seen[0][0][:, :10])


def test_validation_set_is_fixed_and_apart_from_training():
    first = dataset.validation_set(20, seed=3, batch_size=8)
    again = dataset.validation_set(20, seed=3, batch_size=8)
    assert [s.n_curves for s in first] == [8, 8, 4]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.tissue, b.tissue)
    training = next(iter(dataset.SimulatedCurveStream(batch_size=8, seed=3, as_tensors=False)))
    assert training.n_frames != first[0].n_frames or not np.array_equal(training.tissue, first[0].tissue)


def test_a_share_of_exponential_residues():
    from dataclasses import replace

    ranges = replace(TRAINING_RANGES, alpha_one_fraction=0.3)
    sim = simulate_curves(4000, 12, ranges)
    exponential = sim.alpha == 1.0
    assert np.mean(exponential) == pytest.approx(0.3, abs=0.03)
    # the others keep the uniform draw, and the exponential ones are the residue of alpha = 1
    assert sim.alpha[~exponential].min() >= 0.5 and sim.alpha[~exponential].max() <= 100.0
    t = sim.frame_times
    rows = np.flatnonzero(exponential)[:5]
    k = sim.residue[rows] / sim.residue[rows, :1]
    np.testing.assert_allclose(k, np.exp(-t[None, :] / sim.mtt[rows, None]), atol=2e-3)
    # an explicit alpha wins over the share
    assert np.all(simulate_curves(200, 12, ranges, alpha=50.0).alpha == 50.0)
    # the share is drawn after every other parameter: those stay the default draw's, curve for curve
    default = simulate_curves(4000, 12)
    for name in ("cbf", "mtt", "delay", "t_a", "snr_db", "aif_time_scale", "aif_value_scale", "aif_onset"):
        np.testing.assert_array_equal(getattr(sim, name), getattr(default, name), err_msg=name)
    np.testing.assert_array_equal(sim.alpha[~exponential], default.alpha[~exponential])
    # the default (no share) makes no extra draw: the same curves as before the share existed (values
    # computed with the simulator of commit 7da8097; the residue's float32 cumulative sum has since
    # moved to torch, which moves these sums by 3e-7 relative, far below what one changed draw moves)
    before = simulate_curves(300, 5)
    assert float(before.tissue.astype(np.float64).sum()) == pytest.approx(174901.7985877521, rel=1e-6)
    assert float(before.tissue[7, 40]) == pytest.approx(2.9893693923950195, rel=1e-6)
    with pytest.raises(ValueError, match="alpha_one_fraction"):
        SimulationRanges(alpha_one_fraction=1.5)


def test_a_share_of_low_alpha_residues_drawn_log_uniformly():
    from dataclasses import replace

    ranges = replace(TRAINING_RANGES, alpha_one_fraction=0.2, low_alpha_fraction=0.4, low_alpha=(1.0, 10.0))
    sim = simulate_curves(6000, 13, ranges)
    exponential = sim.alpha == 1.0
    assert np.mean(exponential) == pytest.approx(0.2, abs=0.03)
    # without the low share the same seed gives the same exponential curves: the share only adds a draw
    only_one = simulate_curves(6000, 13, replace(ranges, low_alpha_fraction=0.0))
    np.testing.assert_array_equal(only_one.alpha == 1.0, exponential)
    low = (sim.alpha != only_one.alpha) & ~exponential
    assert np.mean(low) == pytest.approx(0.4, abs=0.03)
    assert sim.alpha[low].min() >= 1.0 and sim.alpha[low].max() <= 10.0
    # log-uniform: as many shapes in (1, sqrt 10) as in (sqrt 10, 10); a uniform draw puts 75% above
    assert np.mean(sim.alpha[low] < np.sqrt(10)) == pytest.approx(0.5, abs=0.05)
    # the residue is the gamma shape drawn (alpha = 3 is grey matter's peaked residue)
    t = sim.frame_times
    rows = np.flatnonzero(low)[:5]
    k = sim.residue[rows] / sim.residue[rows, :1]
    np.testing.assert_allclose(k, residue_function(t, sim.mtt[rows], sim.alpha[rows]), atol=3e-3)
    with pytest.raises(ValueError, match="at most 1"):
        SimulationRanges(alpha_one_fraction=0.6, low_alpha_fraction=0.5)
    with pytest.raises(ValueError, match="above 0"):
        SimulationRanges(low_alpha=(0.0, 10.0))


def test_a_share_of_two_tissue_mixtures_closes_the_physics():
    """Partial-volume mixtures (mixture_fraction): w C1 + (1 - w) C2 behind one local AIF. Their truths are the
    mixture's (CBV from the curves' areas with the SVD family, CBF = K(0), MTT = 60 CBV / CBF), the residue stays
    non-negative and non-increasing, the curves not picked are those of the same seed without the share, and
    the noise keeps the SNR definition on the mixed curve."""
    from dataclasses import replace

    ranges = replace(TRAINING_RANGES, mixture_fraction=0.5, mtt=(3.43, 12.0))
    plain = simulate_curves(400, 21, replace(ranges, mixture_fraction=0.0), frame_interval=1.0, n_frames=120,
                            aif_type="gamma", snr_db=np.inf)
    sim = simulate_curves(400, 21, ranges, frame_interval=1.0, n_frames=120, aif_type="gamma", snr_db=np.inf)
    mixed = np.flatnonzero(~np.all(sim.tissue_clean == plain.tissue_clean, axis=1))
    assert 0.4 < mixed.size / 400 < 0.6
    kept = np.setdiff1d(np.arange(400), mixed)
    for name in ("tissue", "residue", "cbf", "cbv", "mtt", "local_aif"):
        np.testing.assert_array_equal(getattr(sim, name)[kept], getattr(plain, name)[kept])
    np.testing.assert_array_equal(sim.local_aif, plain.local_aif)  # one artery feeds both tissues
    rows = mixed[sim.cbf[mixed] > 5][:10]
    cbv = np.array([SVDModel(sim.global_aif[i], sim.frame_times, "ssvd").fit(sim.tissue[i : i + 1]).cbv[0]
                    for i in rows])
    np.testing.assert_allclose(cbv, sim.cbv[rows], rtol=0.01)
    np.testing.assert_allclose(sim.cbv, sim.cbf * sim.mtt / 60.0, rtol=1e-5)
    flow = sim.residue[mixed, 0] * 6000.0 * KAPPA_H / RHO  # K(0) in 1/s back to ml/100 g/min
    np.testing.assert_allclose(flow, sim.cbf[mixed], rtol=1e-4, atol=1e-3)
    assert np.all(sim.residue[mixed] >= 0) and np.all(np.diff(sim.residue[mixed], axis=1) <= 1e-7)
    # a mixture differs from both of its tissues: its CBF lies between theirs, not on the first's
    assert np.mean(np.abs(sim.cbf[mixed] - plain.cbf[mixed]) > 1.0) > 0.8
    noisy = simulate_curves(400, 21, ranges, frame_interval=1.0, n_frames=120, aif_type="gamma", snr_db=10.0)
    np.testing.assert_allclose(noisy.noise_sigma, noisy.tissue_clean.max(axis=1) / 10 ** 0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="mixture_weight must lie within"):
        SimulationRanges(mixture_weight=(0.5, 1.5))
