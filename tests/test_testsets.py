"""The six test sets have the parameter distributions of Table 1 (ranges and counts)."""

import numpy as np
import pytest

from ctp_nipype.sims.testsets import (
    TEST_CBV,
    TEST_SETS,
    curve_levels,
    level_counts,
    make_test_set,
    make_test_sets,
    n_frames_for,
)

N = 770  # divisible by 7, 11, 5 and 2; small enough to be quick


@pytest.fixture(scope="module")
def sets():
    return make_test_sets(n_curves=N)


def _pooled(groups, name):
    return np.concatenate([np.asarray(getattr(g, name)) for g in groups])


@pytest.mark.parametrize("number", sorted(TEST_SETS))
def test_common_settings_of_table_1(sets, number):
    groups = sets[number]
    spec = TEST_SETS[number]
    assert sum(g.n_curves for g in groups) == N
    cbf, mtt = _pooled(groups, "cbf"), _pooled(groups, "mtt")
    np.testing.assert_allclose(_pooled(groups, "cbv"), TEST_CBV)  # CBV = 4 ml/100 g
    np.testing.assert_allclose(cbf, 60.0 * TEST_CBV / mtt)
    assert mtt.min() >= 3.43 and mtt.max() <= 24.0 and mtt.max() - mtt.min() > 15
    for name, value in (("alpha", 1.0), ("t_a", 0.0), ("snr_db", 20.0)):
        if spec.variable != name:
            assert np.all(_pooled(groups, name) == value), name
    if spec.variable != "delay":
        delay = _pooled(groups, "delay")
        assert delay.min() >= 0.0 and delay.max() <= 25.0 and delay.max() - delay.min() > 20
    if spec.variable != "frame_interval":
        assert [(g.frame_interval, g.n_frames) for g in groups] == [(1.0, 80)]
    types = _pooled(groups, "aif_type")
    assert np.sum(types == "parker") == np.sum(types == "gamma") == N // 2
    for name in ("aif_time_scale", "aif_value_scale"):
        values = _pooled(groups, name)
        assert values.min() >= 0.7 and values.max() <= 1.3
    for g in groups:  # T = 80 s: frames at 0, dt, ... below 80 s
        assert g.frame_times[0] == 0 and g.frame_times[-1] < 80.0 <= g.frame_times[-1] + g.frame_interval


@pytest.mark.parametrize("number", sorted(TEST_SETS))
def test_the_variable_takes_its_levels_in_equal_shares(sets, number):
    spec = TEST_SETS[number]
    levels = np.concatenate([curve_levels(spec, g) for g in sets[number]])
    counts = [int(np.sum(levels == level)) if isinstance(level, str) else int(np.sum(np.isclose(levels, level)))
              for level in spec.levels]
    assert counts == level_counts(N, len(spec.levels))
    assert sum(counts) == N


def test_table_1_levels():
    assert TEST_SETS[1].levels == (5, 7, 10, 15, 20, 25, 30)
    assert TEST_SETS[2].levels == tuple(range(11))
    assert TEST_SETS[3].levels == (0, 1, 2, 3, 4, 5)
    assert TEST_SETS[4].levels == (1, 1.1, 1.3, 1.6, 2)
    assert set(TEST_SETS[5].levels) == {"parker", "gamma"}
    assert TEST_SETS[6].levels == (1, 100)


def test_frame_interval_set_has_one_grid_per_interval(sets):
    groups = sets[4]
    assert [round(g.frame_interval, 6) for g in groups] == [1.0, 1.1, 1.3, 1.6, 2.0]
    assert [g.n_frames for g in groups] == [n_frames_for(dt) for dt in (1.0, 1.1, 1.3, 1.6, 2.0)]


def test_default_seed_makes_the_same_set_and_seeds_differ():
    a, b = make_test_set(6, 20)[0], make_test_set(6, 20)[0]
    np.testing.assert_array_equal(a.tissue, b.tissue)
    c = make_test_set(6, 20, seed=1)[0]
    assert not np.array_equal(a.tissue, c.tissue)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="Unknown test set"):
        make_test_set(7)
    with pytest.raises(ValueError, match="at least 11"):
        make_test_set(2, n_curves=5)
