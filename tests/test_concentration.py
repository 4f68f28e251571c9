"""perfusion/concentration.py: bolus arrival, baseline and the concentration curves."""

import numpy as np
import pytest

from ctp_nipype.perfusion import (
    detect_bolus_arrival,
    to_concentration,
)
from ctp_nipype.perfusion.concentration import ConcentrationError

from helpers import fine_grid_case


def test_bolus_arrival_and_baseline():
    aif, tissue, t = fine_grid_case()
    hu = aif + 40.0
    arrival = detect_bolus_arrival(hu)
    assert 8 <= arrival <= 11  # bolus starts at 10 s
    conc = to_concentration(np.stack([hu, tissue + 35.0]), arrival)
    np.testing.assert_allclose(conc[0], aif, atol=1e-9)
    np.testing.assert_allclose(conc[1], tissue, atol=1e-9)


def test_no_bolus_is_a_specific_error():
    with pytest.raises(ConcentrationError, match="no bolus"):
        detect_bolus_arrival(np.full(40, 35.0))


def test_baseline_frame_count_is_checked():
    with pytest.raises(ConcentrationError, match="between 1 and 3"):
        to_concentration(np.zeros(4), 4)
