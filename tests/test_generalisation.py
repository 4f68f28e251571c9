"""The generalisation suite (issue 28 item 2): its curves' physics, its cells, what it holds out, its command."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

from ctp_nipype.cli import evaluate as evaluate_cli
from ctp_nipype.nn import training
from ctp_nipype.perfusion.constants import KAPPA_H, RHO
from ctp_nipype.perfusion.convolution import trapezoid_integral
from ctp_nipype.perfusion.generalisation import cell_metrics
from ctp_nipype.sims import generalisation as suite
from ctp_nipype.sims.simulate import AIF_TYPES, TRAINING_RANGES, SimulationRanges, residue_function
from ctp_nipype.sims.testsets import COMMON_SETTINGS, TEST_SETS


@pytest.mark.parametrize("shape", suite.RESIDUE_SHAPES)
@pytest.mark.parametrize("family", ["gamma", "two injections"])
def test_noise_free_curves_keep_the_conventions_cbv(shape, family):
    """100 kappa_H / rho * integral(C) / integral(Ca) = CBF * MTT / 60 when the window holds the passage."""
    sim, shapes = suite.simulate_suite_curves(
        4, 1, cbf=[20.0, 40.0, 60.0, 90.0], mtt=3.0, residue_shape=shape, delay=[0.0, 2.0, 4.0, 1.0],
        t_a=[0.0, 1.0, 2.0, 0.5], aif_family=family, frame_interval=1.0, window=120.0, snr_db=np.inf)
    assert list(shapes) == [shape] * 4 and np.all(sim.tissue == sim.tissue_clean)
    cbv = 100 * KAPPA_H / RHO * trapezoid_integral(sim.tissue, 1.0) / trapezoid_integral(sim.global_aif, 1.0)
    np.testing.assert_allclose(cbv, sim.cbf * 3.0 / 60, rtol=0.02)
    # the flow-scaled residue starts at K(0) = (rho / kappa_H) CBF / 6000
    np.testing.assert_allclose(sim.residue[:, 0], RHO / KAPPA_H * sim.cbf / 6000, rtol=1e-5)


def test_a_short_window_cuts_late_curves_off():
    common = dict(cbf=50.0, mtt=16.0, residue_shape="gamma 3", t_a=0.0, aif_family="gamma", frame_interval=1.5,
                  snr_db=np.inf, aif_onset=5.0, aif_time_scale=1.0, aif_value_scale=1.0)
    whole, _ = suite.simulate_suite_curves(1, 0, delay=12.0, window=150.0, **common)
    cut, _ = suite.simulate_suite_curves(1, 0, delay=12.0, window=45.0, **common)
    assert cut.n_frames == 30 and whole.n_frames == 100
    np.testing.assert_allclose(cut.tissue[0], whole.tissue[0, :30], rtol=1e-5, atol=1e-5)  # the same curve, cut off
    def area_cbv(sim):
        return 100 * KAPPA_H / RHO * trapezoid_integral(sim.tissue, sim.frame_interval)[0] / trapezoid_integral(
            sim.global_aif, sim.frame_interval)[0]

    assert area_cbv(whole) == pytest.approx(50.0 * 16.0 / 60, rel=0.02)
    assert area_cbv(cut) < 0.9 * 50.0 * 16.0 / 60  # the window holds too little of the late curve


def test_the_non_gamma_residues_lie_outside_the_training_family():
    """No gamma residue (any shape the training draws) comes within 0.05 of the two non-gamma families."""
    t = np.arange(0.0, 60.0, 0.1)
    alphas = np.geomspace(TRAINING_RANGES.alpha[0], TRAINING_RANGES.alpha[1], 400)
    for mtt in (3.0, 8.0, 16.0):
        gammas = residue_function(t, np.full(alphas.size, mtt), alphas)
        for name in suite.NON_GAMMA_RESIDUES:
            other = suite.residue_curves(t, [mtt], [name])[0]
            assert np.abs(gammas - other).max(axis=1).min() > 0.05, (name, mtt)


def test_the_held_out_aif_families_are_drawn_by_no_training_recipe_and_no_test_set():
    assert set(suite.HELD_OUT_AIF_FAMILIES).isdisjoint(AIF_TYPES)
    assert set(COMMON_SETTINGS["aif_type"]) <= set(AIF_TYPES)
    for family in suite.HELD_OUT_AIF_FAMILIES:
        with pytest.raises(ValueError, match="aif_types"):
            SimulationRanges(aif_types=(family,))
    for name in training.available_recipes():
        recipe = training.load_recipe(name)
        for stage in training.stage_recipes(recipe):
            assert set(training.simulation_ranges(stage).aif_types) <= set(AIF_TYPES)
    # and the suite's AIFs differ from the training families' shapes
    t = np.arange(0.0, 90.0, 0.1)
    held_out = suite.global_aifs(t, list(suite.HELD_OUT_AIF_FAMILIES), [5.0, 5.0], [1.0, 1.0], [1.0, 1.0])
    for scale in np.linspace(0.7, 1.3, 31):
        trained = suite.global_aifs(t, ["gamma", "parker"], [5.0, 5.0], [scale, scale], [1.0, 1.0])
        assert np.abs(held_out[:, None] - trained[None]).max(axis=-1).min() > 0.1 * held_out.max()


def test_every_cell_sets_its_axis_and_draws_the_rest_from_the_base():
    cells = suite.make_suite(3, seed=5)
    assert [(c.axis, c.level) for c in cells] == [(a, level) for a, levels in suite.AXES.items() for level in levels]
    for cell in cells:
        sim, parameter = cell.sim, suite.AXIS_PARAMETER[cell.axis]
        values = {"cbf": sim.cbf, "mtt": sim.mtt, "delay": sim.delay, "t_a": sim.t_a, "snr_db": sim.snr_db,
                  "aif_family": sim.aif_type, "residue_shape": cell.residue_shape,
                  "frame_interval": np.full(3, sim.frame_interval),
                  "window": np.full(3, sim.n_frames * sim.frame_interval)}
        for name, spec in suite.BASE.items():
            got = values[name]
            if name == parameter:
                if name == "window":  # frames up to the window's end
                    assert cell.level - sim.frame_interval < got[0] <= cell.level + 1e-9
                else:
                    assert np.all(got == cell.level) or (name == "snr_db" and np.all(np.isinf(got)))
            elif name == "delay" and cell.axis == "window (s)":
                assert np.all((got >= 0) & (got <= suite.WINDOW_AXIS_DELAY[1]))
            elif isinstance(spec, tuple) and isinstance(spec[0], str):
                assert set(got) <= set(spec)
            elif isinstance(spec, tuple):
                assert np.all((got >= spec[0]) & (got <= spec[1])), name
            else:
                assert np.allclose(got, spec) if name != "window" else spec - sim.frame_interval < got[0] <= spec
    # reproducible, and another seed draws other curves
    again = suite.make_suite(3, seed=5, axes=["MTT (s)"])
    np.testing.assert_array_equal(again[0].sim.tissue, cells[len(suite.AXES["residue shape"]) + 6].sim.tissue)
    assert not np.array_equal(suite.make_suite(3, seed=6, axes=["MTT (s)"])[0].sim.tissue, again[0].sim.tissue)
    with pytest.raises(ValueError, match="axis"):
        suite.make_suite(3, axes=["colour"])


def test_the_low_flow_cell_has_the_noise_of_a_clinical_slice():
    cell = suite.low_flow_cell(40, seed=3)
    sim = cell.sim
    assert np.all((sim.cbf >= 5) & (sim.cbf <= 20) & (sim.mtt >= 8) & (sim.mtt <= 16))
    grey, _ = suite.simulate_suite_curves(
        40, 0, cbf=60.0, mtt=4.0, residue_shape="gamma 3", delay=0.0, t_a=0.0, aif_family=sim.aif_type,
        frame_interval=sim.frame_interval, window=72.0, aif_time_scale=sim.aif_time_scale,
        aif_value_scale=sim.aif_value_scale, aif_onset=sim.aif_onset)
    np.testing.assert_allclose(sim.noise_sigma, grey.tissue_clean.max(axis=1) / 4.0, rtol=1e-6)
    measured = np.std(sim.tissue - sim.tissue_clean, axis=1) / sim.noise_sigma
    assert 0.85 < np.median(measured) < 1.15


def test_cell_metrics_by_hand():
    sim = suite.make_suite(4, axes=["T_A (s)"])[4].sim  # T_A = 4 s: no curve in the delay target's range
    row = cell_metrics(sim, sim.cbf * np.array([0.5, 1.0, 1.5, 2.0]), sim.delay + np.array([-1.0, 1.0, 2.0, 3.0]))
    assert row["n"] == 4 and row["cbf_ratio_median"] == pytest.approx(1.25)
    assert row["cbf_ratio_q25"] == pytest.approx(0.875) and row["cbf_ratio_q75"] == pytest.approx(1.625)
    assert row["delay_error_median"] == pytest.approx(1.5) and row["delay_abs_error_median"] == pytest.approx(1.5)
    assert np.isnan(row["delay_abs_error_median_target"])


def test_ctp_evaluate_runs_the_suite_at_a_small_size(tmp_path):
    assert evaluate_cli.main([str(tmp_path), "--suite", "generalisation", "--n-curves", "4", "--methods", "ssvd",
                              "--quiet"]) == 0
    rows = (tmp_path / "generalisation.tsv").read_text().splitlines()
    n_cells = sum(len(levels) for levels in suite.AXES.values())
    assert len(rows) == 1 + n_cells
    table = (tmp_path / "generalisation.md").read_text()
    assert all(f"### {axis}" in table for axis in suite.AXES) and "two injections" in table
    assert (tmp_path / "generalisation.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "generalisation.json").read_text())["CurvesPerCell"] == 4


def test_the_suite_is_not_the_training_draws():
    """Cells the training never draws: held-out AIFs and residues; frame counts below the paper's 45."""
    cells = {(c.axis, c.level): c for c in suite.make_suite(2)}
    assert cells["window (s)", 45.0].sim.n_frames < TRAINING_RANGES.n_frames[0]
    assert cells["AIF family", "two injections"].sim.aif_type[0] not in AIF_TYPES
    assert np.isnan(cells["residue shape", "two-compartment"].sim.alpha).all()
    assert {f.name for f in fields(SimulationRanges)} >= {"aif_types", "alpha"}
    assert all(number in TEST_SETS for number in range(1, 7))
