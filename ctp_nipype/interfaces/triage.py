"""Nipype interfaces of the triage outputs that are not lesion statistics: the time-to-peak map and the
one-page summary figure per method.

* :class:`TimeToPeak` -> ``<prefix>_ttp.nii.gz`` (+ ``.json``): TTP from the tissue concentration curves. It
  depends on the scan, not on the perfusion method, so it is one map per scan, without a ``desc-<method>``
  entity (the same file whatever methods run).
* :class:`TriageSummary` -> ``<prefix>_desc-<method>_summary.png`` per method: core and hypoperfusion over the
  slices, the volumes and the DEFUSE 3 / EXTEND flags with their criteria.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..bids import derivative_name
from ..io import (
    InputError,
    load_ctp,
    load_mask,
    load_nifti,
    output_prefix,
    provenance,
    read_json,
    timing_provenance,
    write_nifti,
)
from ..perfusion.constants import UNITS
from ..perfusion.triage import DEFAULT_PEAK_INTERPOLATION, PEAK_INTERPOLATIONS, series_time_to_peak
from ._curves import load_curve_inputs
from .stats import parse_map_filename


class _TimeToPeakInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU (x, y, z, t), as the methods read it")
    aif_file = File(exists=True, mandatory=True,
                    desc="TSV with the AIF (HU): its bolus arrival sets the baseline, as for the deconvolution")
    aif_column = traits.Str("aif", usedefault=True, desc="column of aif_file to use")
    mask_file = File(exists=True, desc="3D mask of the voxels to compute (default: all voxels)")
    peak_interpolation = traits.Enum(
        DEFAULT_PEAK_INTERPOLATION, *PEAK_INTERPOLATIONS, usedefault=True,
        desc="the curve's sampled maximum, or a parabola through it and its neighbours (as Tmax)",
    )
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    n_baseline_frames = traits.Int(desc="pre-bolus frames for the baseline (default: detected from the AIF)")
    out_prefix = traits.Str(desc="output file-name prefix (default: input name without _ctp and extension)")


class _TimeToPeakOutputSpec(TraitedSpec):
    ttp = File(exists=True, desc="<prefix>_ttp.nii.gz: time to peak of the tissue concentration, s")


class TimeToPeak(SimpleInterface):
    """Time-to-peak map of the tissue concentration curves (one map per scan, whatever the methods).

    The series goes through :func:`ctp_nipype.perfusion.prepare.prepare_curves`
    (uniform grid, baseline from the AIF's arrival: the curves every method
    deconvolves), then :func:`ctp_nipype.perfusion.triage.time_to_peak`, chunk
    by chunk of slices of the lazily read series
    (:func:`ctp_nipype.perfusion.triage.series_time_to_peak`: memory bounded by
    a chunk and the map). TTP is counted on the frames' clock (seconds from the
    first frame's ``FrameTimesStart``, usually the start of the acquisition).

    Examples
    --------
    >>> TimeToPeak().inputs.peak_interpolation
    'sampled'
    """

    input_spec = _TimeToPeakInputSpec
    output_spec = _TimeToPeakOutputSpec

    def _run_interface(self, runtime):
        scan, aif_hu, mask = load_curve_inputs(self.inputs, lazy=True)
        n_baseline_frames = self.inputs.n_baseline_frames if isdefined(self.inputs.n_baseline_frames) else None
        ttp, curves = series_time_to_peak(scan.data, scan.frame_times, aif_hu, mask, n_baseline_frames,
                                          self.inputs.peak_interpolation)
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else output_prefix(self.inputs.in_file)
        path = os.path.join(runtime.cwd, derivative_name(prefix, "ttp"))
        write_nifti(path, ttp, scan.affine, scan.header, {
            "Units": UNITS["ttp"],
            "Description": "Time to peak of the tissue concentration curve, seconds on the frames' clock "
                           "(FrameTimesStart; 0 at the first frame when it starts at 0); 0 outside the mask",
            "PeakInterpolation": self.inputs.peak_interpolation,
            **curves.describe(),
            **timing_provenance(scan, curves.resampled),
            **provenance(self.inputs.in_file, self.inputs.aif_file),
        })
        self._results["ttp"] = path
        return runtime


class _TriageSummaryInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the 4D CTP scan (HU): its time average is the background")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask (crops the slices, picks them)")
    lesion_files = InputMultiObject(
        File(exists=True), mandatory=True,
        desc="lesion JSONs of LesionVolumes, <prefix>_desc-<method>_lesion.json (their MaskFiles are read "
             "from the same folder)",
    )
    delay_files = InputMultiObject(
        File(exists=True), mandatory=True,
        desc="each method's Tmax or BAD map, <prefix>_desc-<method>_<tmax|bad>.nii.gz (graded hypoperfusion)",
    )
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix (default: the scan's prefix)")


class _TriageSummaryOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="<prefix>_desc-<method>_summary.png, one per method (a list)")


class TriageSummary(SimpleInterface):
    """One-page triage summary figure per method (PNG), as a stroke team gets from commercial software.

    Core (red) and hypoperfusion graded by delay over the time-averaged scan
    (only the slices shown are read from the lazily loaded series),
    the volumes (core, delay > 4/6/8/10 s, mismatch volume and ratio,
    hypoperfusion intensity ratio) and the DEFUSE 3 / EXTEND flags with their
    criteria, read from each method's lesion JSON; drawn by
    :func:`ctp_nipype.reports.figures.triage_summary`.

    Examples
    --------
    >>> TriageSummary().inputs.out_prefix
    <undefined>
    """

    input_spec = _TriageSummaryInputSpec
    output_spec = _TriageSummaryOutputSpec

    def _run_interface(self, runtime):
        from ..reports.figures import slices_to_show, triage_summary
        from ..reports.scan import TimeAveragedSlices

        scan = load_ctp(self.inputs.in_file, lazy=True,
                        frame_interval=self.inputs.frame_interval if isdefined(self.inputs.frame_interval) else None)
        shape, affine = scan.spatial_shape, scan.affine
        brain = load_mask(self.inputs.brain_mask, shape, affine, "brain mask")
        background = TimeAveragedSlices(scan.data)  # only the slices drawn are read and averaged
        slices = slices_to_show(brain)
        delays = {}
        for path in self.inputs.delay_files:
            parsed = parse_map_filename(path)
            if parsed is None or parsed[2] not in ("tmax", "bad"):
                raise InputError(f"The delay map {path} is not named <prefix>_desc-<method>_<tmax|bad>.nii.gz.")
            delays[parsed[1]] = path
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else output_prefix(self.inputs.in_file)
        written = []
        for path in self.inputs.lesion_files:
            summary = read_json(path)
            method = summary.get("Method") or parse_map_filename(path)[1]
            if method not in delays:
                raise InputError(f"No delay map of {method} among delay_files for the lesion file {path}.")
            masks = {}
            for label in ("core", "hypoperfused"):
                name = summary.get("MaskFiles", {}).get(label)
                mask_path = Path(path).with_name(name) if name else None
                if mask_path is None or not mask_path.exists():
                    raise InputError(f"The {label} mask named in {path} ({name}) is not next to it.")
                masks[label] = load_mask(mask_path, shape, affine, f"{method} {label} mask")
            _, delay = load_nifti(delays[method], f"{method} delay map")
            png = triage_summary(background, brain, masks["core"], masks["hypoperfused"],
                                 np.asarray(delay, np.float32), summary, f"{prefix}: {method}", slices, affine)
            out = os.path.join(runtime.cwd, derivative_name(prefix, "summary", desc=method, extension=".png"))
            Path(out).write_bytes(png)
            written.append(out)
        self._results["out_files"] = written
        return runtime
