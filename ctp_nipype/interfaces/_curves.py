"""Reading a scan and its AIF into concentration curves: shared by every interface that reads the curves."""

from __future__ import annotations

import numpy as np
from nipype.interfaces.base import isdefined

from ..io import load_ctp, load_mask, read_curve_tsv
from ..perfusion.prepare import prepare_curves


def _given(value):
    return value if isdefined(value) else None


def load_curve_inputs(inputs, lazy=False):
    """``(scan, aif_hu, mask)`` from an interface's ``in_file``, ``aif_file``, ``aif_column``, ``mask_file`` and
    ``frame_interval`` inputs; with ``lazy`` the series is nibabel's proxy (:func:`ctp_nipype.io.load_ctp`).

    The mask defaults to every voxel.
    """
    scan = load_ctp(inputs.in_file, frame_interval=_given(inputs.frame_interval), lazy=lazy)
    aif_hu, _ = read_curve_tsv(inputs.aif_file, inputs.aif_column, n_frames=scan.data.shape[3])
    mask = (load_mask(inputs.mask_file, scan.spatial_shape, scan.affine) if isdefined(inputs.mask_file)
            else np.ones(scan.spatial_shape, bool))
    return scan, aif_hu, mask


def load_prepared_curves(inputs):
    """``(scan, mask, curves)`` from an interface's ``in_file``, ``aif_file``, ``aif_column``, ``mask_file``,
    ``frame_interval`` and ``n_baseline_frames`` inputs.

    The series and the AIF go through :func:`ctp_nipype.perfusion.prepare.prepare_curves` (uniform grid,
    baseline from the AIF's arrival): the curves every method deconvolves. The mask defaults to every voxel.
    """
    scan, aif_hu, mask = load_curve_inputs(inputs)
    curves = prepare_curves(scan.data, scan.frame_times, aif_hu, n_baseline_frames=_given(inputs.n_baseline_frames))
    return scan, mask, curves
