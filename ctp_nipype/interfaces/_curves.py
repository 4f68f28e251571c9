"""Reading a scan and its AIF into concentration curves: shared by every interface that reads the curves."""

from __future__ import annotations

import numpy as np
from nipype.interfaces.base import isdefined

from ..io import check_finite, load_ctp, load_mask, read_curve_tsv
from ..perfusion.chunks import masked_curves
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
    ``frame_interval`` and ``n_baseline_frames`` inputs: the curves of the mask's voxels only.

    The mask's curves (``curves.tissue``, shape (n, T) in ``series[mask]``'s order, the order in which
    :func:`ctp_nipype.io.write_perfusion_maps` puts values back with ``mask``) are read chunk by chunk
    (:func:`ctp_nipype.perfusion.chunks.masked_curves`: never the whole series, never the voxels outside the
    mask), and go with the AIF through :func:`ctp_nipype.perfusion.prepare.prepare_curves` (uniform grid,
    baseline from the AIF's arrival): the curves every method deconvolves. The mask defaults to every voxel.
    A series read lazily (the pipeline's own uncompressed ones) has :func:`ctp_nipype.io.load_ctp`'s check for
    non-finite values run on the curves read.
    """
    scan, aif_hu, mask = load_curve_inputs(inputs, lazy=True)
    tissue_hu = masked_curves(scan.data, mask)
    if not isinstance(scan.data, np.ndarray):  # read lazily: load_ctp's check of a series it reads whole, here
        check_finite(tissue_hu, inputs.in_file)
    curves = prepare_curves(tissue_hu, scan.frame_times, aif_hu, n_baseline_frames=_given(inputs.n_baseline_frames))
    return scan, mask, curves
