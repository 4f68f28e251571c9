"""Nipype interfaces of the preprocessing steps: load, motion correction, masks, AIF/VOF, guided filter.

Each interface reads files, calls the science in :mod:`ctp_nipype.perfusion`
and writes its outputs into the node's working directory. File names keep the
input's prefix (``<prefix>_ctp.nii`` for series, uncompressed, ``<prefix>_desc-brain_mask.nii.gz``,
``<prefix>_desc-global_aif.tsv``, ...), each with a JSON sidecar saying what
was done and with which parameters.
"""

from __future__ import annotations

import warnings

import os

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..bids import derivative_name
from ..io import (
    PLAUSIBLE_HU,
    InputError,
    SeriesValueChecks,
    check_frame_count,
    load_ctp,
    load_mask,
    load_nifti,
    output_prefix,
    provenance,
    read_curve_tsv,
    read_frames,
    read_timing,
    refuse_non_finite,
    write_curves_tsv,
    write_nifti,
    write_sidecar,
)
from ..perfusion import aif as aif_selection
from ..perfusion import filtering, masks, motion
from ..perfusion.chunks import read_slices
from ..perfusion.timing import frames_on_grid, resample_to_uniform, uniform_grid
from ..slabs import FrameWriter, SliceWriter

#: the series passed between the steps is an uncompressed NIfTI: read by slices without decompressing it
#: (:mod:`ctp_nipype.perfusion.chunks`); it stays in the work folder, never among the derivatives
SERIES_EXTENSION = ".nii"


def _optional(value, default=None):
    return value if isdefined(value) else default


def _out(runtime, name):
    return os.path.join(runtime.cwd, name)


def _load_uniform(in_file, frame_interval=None, lazy=False):
    """The scan, its series on a uniform grid, the grid and whether it was resampled.

    With ``lazy`` the series of a uniform uncompressed float32 NIfTI (the pipeline's, after LoadCTP) is
    nibabel's proxy, read by chunks of slices (:mod:`ctp_nipype.perfusion.chunks`); a series that needs
    resampling (a user's file given to the interface on its own) is read whole.
    """
    scan = load_ctp(in_file, frame_interval=frame_interval, lazy=lazy)
    if scan.timing.is_uniform:
        return scan, scan.data, scan.frame_times, False
    data, times = resample_to_uniform(np.asarray(scan.data, dtype=np.float32), scan.frame_times)
    return scan, data.astype(np.float32), times, True


def _timing_sidecar(times, resampled, source, original=None):
    sidecar = {
        "FrameTimesStart": [float(t) for t in times],
        "RepetitionTime": float(times[1] - times[0]),
        "TimingSource": source,
        "ResampledToUniformGrid": bool(resampled),
    }
    if resampled and original is not None:
        sidecar["OriginalFrameTimes"] = [float(t) for t in original]
        sidecar["ResamplingMethod"] = "linear interpolation in time onto the smallest original frame step"
    return sidecar


#: the input that leaves motion-displaced frames out of a step (masks, AIF/VOF selection)
_MOTION_FILE_DESC = (
    "motion TSV of MotionCorrection: the frames its 'censored' column flags (displaced from the reference by "
    "more than its max_displacement_mm) are left out of this step"
)


def _censored_frames(motion_file, n_frames, in_file):
    """The frames flagged in a MotionCorrection TSV's 'censored' column; None without a file or a flag."""
    if not isdefined(motion_file):
        return None
    flags, _ = read_curve_tsv(motion_file, "censored", n_frames=None)
    if flags.size != n_frames:
        raise InputError(
            f"The motion file {motion_file} has {flags.size} rows but {in_file} has {n_frames} frames; "
            "give the motion file of MotionCorrection for this series."
        )
    flags = np.asarray(flags) > 0.5
    if flags.all():
        raise InputError(
            f"The motion file {motion_file} censors every frame; raise MotionCorrection's max_displacement_mm "
            "or leave the motion file out."
        )
    return flags if flags.any() else None


def _censoring_sidecar(censored):
    return {} if censored is None else {"CensoredFrames": np.flatnonzero(censored).tolist()}


def _write_mask(runtime, name, mask, scan, sidecar):
    path = _out(runtime, name)
    write_nifti(path, mask.astype(np.uint8), scan.affine, scan.header, sidecar, dtype=np.uint8)
    return path


# ----------------------------------------------------------------------------------------------
# LoadCTP


class _LoadCTPInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP NIfTI in HU (x, y, z, t)")
    sidecar_file = File(exists=True, desc="JSON sidecar with the timing (default: the file next to in_file)")
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    min_frames = traits.Int(10, usedefault=True, desc="fewer frames than this is an error")
    allow_long_frames = traits.Bool(
        False, usedefault=True, desc="accept frame intervals above 10 s and series above 10 minutes (the timing "
        "rules of ctp_nipype.perfusion.timing.check_timing_units); recorded as AllowLongFrames for later steps",
    )
    hu_range = traits.Tuple(PLAUSIBLE_HU, traits.Float, traits.Float, usedefault=True, desc="plausible HU range (min, max)"
    )
    head_motion_mm = traits.Float(
        motion.HEAD_MOTION_MM, usedefault=True,
        desc="warn of head motion when the skull's surface moves by more than this (mm) in some frame",
    )
    warn_head_motion = traits.Bool(
        True, usedefault=True, desc="warn when the head moved (off when motion correction follows; the check "
        "is in the sidecar either way)",
    )
    out_prefix = traits.Str(desc="output file-name prefix (default: input name without _ctp and extension)")


class _LoadCTPOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 4D series in HU on a uniform time grid")
    out_json = File(exists=True, desc="sidecar of out_file: FrameTimesStart, RepetitionTime, resampling")
    frame_times_file = File(exists=True, desc="TSV with a 'time' column (s), one row per frame of out_file")
    resampled = traits.Bool(desc="whether the series was resampled onto a uniform grid")
    frame_interval = traits.Float(desc="frame interval of out_file in seconds")
    head_moved = traits.Bool(desc="whether the skull moved by more than head_motion_mm (see the sidecar)")


class LoadCTP(SimpleInterface):
    """Read a 4D CTP scan and its timing, check it, and write it on a uniform time grid.

    Checks, each with its own error: 4D, at least ``min_frames`` frames,
    finite values, plausible HU (:func:`ctp_nipype.io.check_plausible_hu`), some change over
    time (:func:`ctp_nipype.io.check_enhancement`), a timing source
    and strictly increasing frame times. A non-uniformly sampled series is
    interpolated linearly onto a uniform grid with the smallest original step,
    and the sidecar says so (``ResampledToUniformGrid``, ``OriginalFrameTimes``).

    Examples
    --------
    >>> LoadCTP(frame_interval=1.0).inputs.min_frames
    10
    """

    input_spec = _LoadCTPInputSpec
    output_spec = _LoadCTPOutputSpec

    def _run_interface(self, runtime):
        # one pass over the (possibly gzipped) scan, a frame at a time: checked, put on the uniform grid and
        # written uncompressed; then the head-motion check reads the written series chunk by chunk
        path = self.inputs.in_file
        timing, meta = read_timing(path, frame_interval=_optional(self.inputs.frame_interval),
                                   sidecar=_optional(self.inputs.sidecar_file),
                                   allow_long_frames=self.inputs.allow_long_frames)
        img = nb.load(path)
        check_frame_count(img.shape[3], path, self.inputs.min_frames)
        resampled = not timing.is_uniform
        times = uniform_grid(timing.frame_times) if resampled else timing.frame_times
        prefix = _optional(self.inputs.out_prefix, output_prefix(path))
        out_file = _out(runtime, derivative_name(prefix, "ctp", extension=SERIES_EXTENSION))
        checks = SeriesValueChecks(path, self.inputs.hu_range)
        with FrameWriter(out_file, img.shape[:3] + (times.size,), img.affine, img.header) as out:
            for frame in frames_on_grid(_checked(read_frames(path), checks), timing.frame_times, times):
                out.write(frame)
            checks.check()  # before the file is published
        sidecar = {**meta, **_timing_sidecar(times, resampled, timing.source, timing.frame_times)}
        if self.inputs.allow_long_frames:
            sidecar["AllowLongFrames"] = True
        series = nb.load(out_file, mmap=False).dataobj  # read by chunks of slices
        check = head_motion_check(series, img.header.get_zooms()[:3], self.inputs.head_motion_mm)
        sidecar["HeadMotionCheck"] = check
        if check["HeadMoved"] and self.inputs.warn_head_motion:
            warnings.warn(f"{path}: {HEAD_MOTION_WARNING.format(**check)}", stacklevel=1)
        sidecar.update(provenance(path))
        write_sidecar(out_file, sidecar)
        times_file = write_curves_tsv(_out(runtime, derivative_name(prefix, "frametimes", extension=".tsv")), {"time": times})
        self._results.update(
            out_file=out_file,
            out_json=_out(runtime, derivative_name(prefix, "ctp", extension=".json")),
            frame_times_file=str(times_file),
            resampled=bool(resampled),
            frame_interval=float(times[1] - times[0]),
            head_moved=bool(check["HeadMoved"]),
        )
        return runtime


def _checked(frames, checks):
    """Pass the frames on, each seen by ``checks`` (:class:`ctp_nipype.io.SeriesValueChecks`) first."""
    for frame in frames:
        checks.update(frame)
        yield frame


#: what the user reads when LoadCTP finds head motion (formatted with a HeadMotionCheck)
HEAD_MOTION_WARNING = (
    "Head motion: the skull's surface moves by up to {MaxBoneSurfaceDisplacementMM:.2g} mm during the scan "
    "(above {ThresholdMM:g} mm). Without motion correction (--motion-correction, or the MotionCorrection "
    "interface) bone at the brain's edge passes for enhancement, and the AIF, the masks and the maps can be wrong."
)


def head_motion_check(data, spacing, threshold_mm):
    """The sidecar's ``HeadMotionCheck``: :func:`ctp_nipype.perfusion.motion.bone_surface_displacement` summed up."""
    displacement = motion.bone_surface_displacement(data, spacing)
    check = {
        "Method": "mean displacement of the skull's surface (HU > 700) from its usual place, per frame",
        "ThresholdMM": float(threshold_mm),
    }
    if displacement is None:
        return {**check, "MaxBoneSurfaceDisplacementMM": None, "HeadMoved": False,
                "Note": "too little bone in the scan to check"}
    largest = float(displacement.max())
    return {**check, "MaxBoneSurfaceDisplacementMM": round(largest, 3), "HeadMoved": largest > threshold_mm,
            "MovedFrames": np.flatnonzero(displacement > threshold_mm).tolist()}


def head_motion_warning(sidecar):
    """The head-motion warning of a series' sidecar, when LoadCTP found motion and none was corrected."""
    check = sidecar.get("HeadMotionCheck") or {}
    if not check.get("HeadMoved") or "MotionCorrection" in sidecar:
        return None
    return HEAD_MOTION_WARNING.format(**check)


# ----------------------------------------------------------------------------------------------
# MotionCorrection


class _MotionCorrectionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU")
    n_baseline_frames = traits.Int(desc="pre-bolus frames averaged into the reference (default: detected)")
    metric = traits.Enum("meansquares", "mattes", "correlation", usedefault=True, desc="registration metric")
    sampling_fraction = traits.Float(0.2, usedefault=True, desc="fraction of voxels sampled at the finest level")
    max_displacement_mm = traits.Float(
        motion.MAX_DISPLACEMENT_MM, usedefault=True,
        desc="frames displaced from the reference by more than this (mm, translations plus rotations as arc "
        "length at 50 mm) are flagged 'censored' in motion_file, for the masks and the AIF/VOF selection",
    )
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix")


class _MotionCorrectionOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="motion-corrected 4D series (float32, HU)")
    motion_file = File(
        exists=True,
        desc="TSV: time, trans_x_mm, trans_y_mm, trans_z_mm, rot_x_deg, rot_y_deg, rot_z_deg, "
        "framewise_displacement_mm, displacement_mm (from the reference), censored (1: displaced more than "
        "max_displacement_mm)",
    )
    reference_file = File(exists=True, desc="the registration reference: mean of the pre-bolus frames")
    max_framewise_displacement = traits.Float(desc="largest framewise displacement, mm")
    n_censored_frames = traits.Int(desc="frames displaced by more than max_displacement_mm")


class MotionCorrection(SimpleInterface):
    """Rigid 3D registration of every frame to the mean of the pre-bolus frames (SimpleITK).

    See :mod:`ctp_nipype.perfusion.motion` for the metric, the mask of
    enhancing vessels, the pyramid and the parameter conventions.

    Examples
    --------
    >>> MotionCorrection().inputs.metric
    'meansquares'
    """

    input_spec = _MotionCorrectionInputSpec
    output_spec = _MotionCorrectionOutputSpec

    def _run_interface(self, runtime):
        # the pipeline's uncompressed series is read frame by frame and the corrected frames are written as they
        # come: memory holds the reference, the masks and a few frames, whatever the scan's size
        scan, data, times, resampled = _load_uniform(
            self.inputs.in_file, _optional(self.inputs.frame_interval), lazy=True
        )
        prefix = _optional(self.inputs.out_prefix, output_prefix(self.inputs.in_file))
        out_file = _out(runtime, derivative_name(prefix, "ctp", extension=SERIES_EXTENSION))
        with FrameWriter(out_file, data.shape, scan.affine, scan.header) as corrected:
            try:
                result = motion.correct_motion(
                    data, scan.header.get_zooms()[:3], _optional(self.inputs.n_baseline_frames),
                    metric=self.inputs.metric, sampling_fraction=self.inputs.sampling_fraction,
                    max_displacement_mm=self.inputs.max_displacement_mm, out=corrected.write,
                )
            except motion.NonFiniteSeriesError as error:  # a user's .nii read lazily is checked there
                refuse_non_finite(error.count, self.inputs.in_file)
            sidecar = {
                **scan.sidecar,
                **_timing_sidecar(times, resampled, scan.timing.source, scan.frame_times),
                "MotionCorrection": result.sidecar(),
                **provenance(self.inputs.in_file),
            }
            write_sidecar(out_file, sidecar)  # before the series is published: a series always has its sidecar
        reference_file = _out(runtime, derivative_name(prefix, "ct", desc="motionref"))
        write_nifti(reference_file, result.reference, scan.affine, scan.header, {"Description": "mean of pre-bolus frames"})
        motion_file = write_curves_tsv(_out(runtime, derivative_name(prefix, "params", desc="motion", extension=".tsv")), result.columns(times))
        self._results.update(
            out_file=out_file,
            motion_file=str(motion_file),
            reference_file=reference_file,
            max_framewise_displacement=float(result.framewise_displacement.max()),
            n_censored_frames=int(result.censored.sum()),
        )
        return runtime


# ----------------------------------------------------------------------------------------------
# masks


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU")
    in_mask = File(exists=True, desc="user brain mask; replaces the automatic one (checked against the scan's grid)")
    hu_window = traits.Tuple(masks.BRAIN_WINDOW_HU, traits.Float, traits.Float, usedefault=True,
        desc="HU window of brain and CSF on the time-averaged image",
    )
    opening_radius = traits.Int(2, usedefault=True, desc="in-plane opening radius in voxels")
    motion_file = File(exists=True, desc=_MOTION_FILE_DESC)
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix")


class _MaskOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="3D uint8 mask (1 inside)")
    n_voxels = traits.Int(desc="voxels in the mask")


class BrainMask(SimpleInterface):
    """Brain mask from the time-averaged image (HU window, largest component, hole filling).

    Examples
    --------
    >>> BrainMask().inputs.hu_window
    (-5.0, 100.0)
    """

    input_spec = _BrainMaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        scan = load_ctp(self.inputs.in_file, frame_interval=_optional(self.inputs.frame_interval), lazy=True)
        if isdefined(self.inputs.in_mask):
            mask = load_mask(self.inputs.in_mask, scan.spatial_shape, scan.affine, "brain mask")
            sidecar = {"Type": "Brain", "Source": "user", **provenance(self.inputs.in_mask)}
        else:
            censored = _censored_frames(self.inputs.motion_file, scan.data.shape[3], self.inputs.in_file)
            mean_hu = masks.time_average(scan.data, censored)
            mask = masks.brain_mask(mean_hu, self.inputs.hu_window, self.inputs.opening_radius)
            if not mask.any():
                raise InputError(
                    f"No voxel of {self.inputs.in_file} lies in the brain window {self.inputs.hu_window} HU; "
                    "check that the scan is in HU or give a brain mask (in_mask)."
                )
            sidecar = {
                "Type": "Brain",
                "Source": "automatic",
                "Method": "HU window on the time-averaged image, in-plane opening, largest component, hole filling",
                "HUWindow": list(self.inputs.hu_window),
                "OpeningRadiusVoxels": self.inputs.opening_radius,
                **_censoring_sidecar(censored),
                **provenance(self.inputs.in_file),
            }
        prefix = _optional(self.inputs.out_prefix, output_prefix(self.inputs.in_file))
        self._results["out_file"] = _write_mask(runtime, derivative_name(prefix, "mask", desc="brain"), mask, scan, sidecar)
        self._results["n_voxels"] = int(mask.sum())
        return runtime


class _TissueMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask")
    in_mask = File(exists=True, desc="user mask; replaces the automatic one")
    n_baseline_frames = traits.Int(desc="pre-bolus frames (default: detected from the most enhancing voxels)")
    motion_file = File(exists=True, desc=_MOTION_FILE_DESC)
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix")


class _CSFMaskInputSpec(_TissueMaskInputSpec):
    hu_window = traits.Tuple(masks.CSF_WINDOW_HU, traits.Float, traits.Float, usedefault=True, desc="baseline HU range of CSF"
    )
    max_relative_enhancement = traits.Float(
        0.5, usedefault=True, desc="CSF enhances less than this times the brain's median enhancement"
    )


class _VesselMaskInputSpec(_TissueMaskInputSpec):
    csf_mask = File(exists=True, desc="CSF mask, left out of the tissue reference")
    min_relative_cbv = traits.Float(5.0, usedefault=True, desc="vessel: enhancement above this times the tissue median")


class _TissueMask(SimpleInterface):
    """Common run of CSFMask and VesselMask: load, user override or automatic mask, write."""

    output_spec = _MaskOutputSpec
    _kind = ""

    def _automatic(self, data, times, brain, n_base, scan, censored):
        raise NotImplementedError

    def _run_interface(self, runtime):
        scan, data, times, _ = _load_uniform(self.inputs.in_file, _optional(self.inputs.frame_interval), lazy=True)
        brain = load_mask(self.inputs.brain_mask, scan.spatial_shape, scan.affine, "brain mask")
        if isdefined(self.inputs.in_mask):
            mask = load_mask(self.inputs.in_mask, scan.spatial_shape, scan.affine, f"{self._kind} mask")
            sidecar = {"Type": self._kind, "Source": "user", **provenance(self.inputs.in_mask)}
        else:
            censored = _censored_frames(self.inputs.motion_file, times.size, self.inputs.in_file)
            n_base = _optional(self.inputs.n_baseline_frames) or aif_selection.estimate_baseline_frames(
                data, brain, censored_frames=censored
            )
            mask, parameters = self._automatic(data, times, brain, n_base, scan, censored)
            sidecar = {
                "Type": self._kind,
                "Source": "automatic",
                "BaselineFrames": int(n_base),
                **parameters,
                **_censoring_sidecar(censored),
                **provenance(self.inputs.in_file, self.inputs.brain_mask),
            }
        prefix = _optional(self.inputs.out_prefix, output_prefix(self.inputs.in_file))
        name = derivative_name(prefix, "mask", desc=self._kind.lower())
        self._results["out_file"] = _write_mask(runtime, name, mask, scan, sidecar)
        self._results["n_voxels"] = int(mask.sum())
        return runtime


class CSFMask(_TissueMask):
    """CSF: water-like fitted baseline and no enhancement (:func:`ctp_nipype.perfusion.masks.csf_mask`).

    Examples
    --------
    >>> CSFMask().inputs.max_relative_enhancement
    0.5
    """

    input_spec = _CSFMaskInputSpec
    _kind = "CSF"

    def _automatic(self, data, times, brain, n_base, scan, censored):
        mask = masks.csf_mask(
            data, times, brain, n_base, self.inputs.hu_window, self.inputs.max_relative_enhancement,
            censored_frames=censored,
        )
        return mask, {
            "HUWindow": list(self.inputs.hu_window),
            "MaxRelativeEnhancement": self.inputs.max_relative_enhancement,
        }


class VesselMask(_TissueMask):
    """Large vessels: very high relative CBV (:func:`ctp_nipype.perfusion.masks.vessel_mask`).

    Examples
    --------
    >>> VesselMask().inputs.min_relative_cbv
    5.0
    """

    input_spec = _VesselMaskInputSpec
    _kind = "Vessel"

    def _automatic(self, data, times, brain, n_base, scan, censored):
        csf = (
            load_mask(self.inputs.csf_mask, scan.spatial_shape, scan.affine, "CSF mask")
            if isdefined(self.inputs.csf_mask)
            else None
        )
        mask = masks.vessel_mask(
            data, times, brain, n_base, self.inputs.min_relative_cbv, exclude=csf, censored_frames=censored
        )
        return mask, {"MinRelativeCBV": self.inputs.min_relative_cbv}


# ----------------------------------------------------------------------------------------------
# AIF and VOF


class _SelectAIFVOFInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU")
    brain_mask = File(exists=True, mandatory=True, desc="where to search for arteries and veins")
    exclude_mask = File(exists=True, desc="voxels never chosen (e.g. the CSF mask)")
    aif_file = File(exists=True, desc="user AIF: TSV with an 'aif' column in HU (optional 'time'); overrides")
    vof_file = File(exists=True, desc="user VOF: TSV with a 'vof' column in HU (optional 'time'); overrides")
    aif_mask = File(exists=True, desc="user mask of arterial voxels, averaged into the AIF; overrides")
    vof_mask = File(exists=True, desc="user mask of venous voxels, averaged into the VOF; overrides")
    n_aif_voxels = traits.Int(5, usedefault=True, desc="voxels averaged into the automatic AIF")
    n_vof_voxels = traits.Int(5, usedefault=True, desc="voxels averaged into the automatic VOF")
    min_vein_delay = traits.Float(2.0, usedefault=True, desc="VOF voxels arrive at least this many s after the AIF")
    correct_partial_volume = traits.Bool(True, usedefault=True, desc="rescale the AIF to the VOF's first-pass area")
    allow_downscaling = traits.Bool(False, usedefault=True, desc="apply a partial-volume factor below 1")
    motion_file = File(exists=True, desc=_MOTION_FILE_DESC + " (selection and first-pass fits); the 'aif' and "
                       "'vof' columns stay as measured, 'aif_corrected' has those frames repaired (a user TSV's not)")
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix")


class _SelectAIFVOFOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="TSV: time, aif, vof, aif_corrected (HU, baseline included)")
    out_json = File(exists=True, desc="sidecar: voxels, scale factor, first-pass fits, sources")
    out_png = File(exists=True, desc="figure of the curves and of the chosen voxels")
    voxels_file = File(desc="3D label image of the chosen voxels: 1 AIF, 2 VOF (automatic or mask choice)")
    scale = traits.Float(desc="partial-volume factor applied to the AIF's concentration")


def _user_curve(path, column, times, original_times=None, allow_long_frames=False):
    """A user's curve on the scan's uniform grid.

    Interpolated when it has its own 'time' column, or when it has one row per
    frame of the original (non-uniform) series that LoadCTP resampled.
    ``allow_long_frames`` (the scan's ``AllowLongFrames``) lifts the time column's limits.
    """
    values, curve_times = read_curve_tsv(path, column, n_frames=None, check_units=True,
                                         allow_long_frames=allow_long_frames)
    if curve_times is None and original_times is not None and values.size == len(original_times) != times.size:
        curve_times = np.asarray(original_times, dtype=float)
    if curve_times is None:
        if values.size != times.size:
            raise InputError(
                f"The '{column}' column of {path} has {values.size} rows but the (uniform) series has "
                f"{times.size} frames; give one value per frame or add a 'time' column in seconds."
            )
        return values
    if curve_times[0] > times[0] + 1e-6 or curve_times[-1] < times[-1] - 1e-6:
        raise InputError(
            f"The 'time' column of {path} covers {curve_times[0]:g}-{curve_times[-1]:g} s but the series "
            f"runs {times[0]:g}-{times[-1]:g} s; the curve must cover every frame."
        )
    return np.interp(times, curve_times, values)


def _figure_background(series, voxel_lists):
    """The time-averaged series on the slices that the AIF/VOF figure shows (:func:`ctp_nipype.viz.panel_slice`
    of each voxel list (n, 3)), 0 elsewhere: read from those slices only."""
    from ..viz import panel_slice

    image = np.zeros(tuple(series.shape[:3]), np.float32)
    for z in {panel_slice(voxels) for voxels in voxel_lists if voxels is not None and len(voxels)}:
        image[:, :, z] = masks.time_average(read_slices(series, z, z + 1))[:, :, 0]
    return image


class SelectAIFVOF(SimpleInterface):
    """Automatic arterial input and venous output functions, with the partial-volume correction.

    Automatic choice by :func:`ctp_nipype.perfusion.aif.select_vascular_functions`;
    a user TSV or mask replaces the automatic AIF and/or VOF. The corrected AIF
    has the VOF's first-pass area (de la Rosa et al. 2021). Writes the
    conventions' ``<prefix>_desc-global_aif.tsv`` (time, aif, vof,
    aif_corrected; HU with baseline, like a user TSV), a JSON sidecar and a PNG.

    Examples
    --------
    >>> SelectAIFVOF().inputs.n_aif_voxels
    5
    """

    input_spec = _SelectAIFVOFInputSpec
    output_spec = _SelectAIFVOFOutputSpec

    def _user_mask(self, path, what, scan):
        if not isdefined(path):
            return None
        mask = load_mask(path, scan.spatial_shape, scan.affine, what)
        if not mask.any():
            raise InputError(f"The {what} {path} is empty; it must mark at least one voxel.")
        return mask

    def _run_interface(self, runtime):
        scan, data, times, resampled = _load_uniform(
            self.inputs.in_file, _optional(self.inputs.frame_interval), lazy=True
        )
        brain = load_mask(self.inputs.brain_mask, scan.spatial_shape, scan.affine, "brain mask")
        exclude = (
            load_mask(self.inputs.exclude_mask, scan.spatial_shape, scan.affine, "exclusion mask")
            if isdefined(self.inputs.exclude_mask)
            else None
        )
        original = scan.sidecar.get("OriginalFrameTimes")
        user_curves = {
            column: _user_curve(tsv, column, times, original, bool(scan.sidecar.get("AllowLongFrames"))) if isdefined(tsv) else None
            for column, tsv in (("aif", self.inputs.aif_file), ("vof", self.inputs.vof_file))
        }
        choice = aif_selection.choose_vascular_functions(
            data,
            times,
            brain,
            exclude_mask=exclude,
            aif_curve=user_curves["aif"],
            vof_curve=user_curves["vof"],
            aif_mask=None if user_curves["aif"] is not None else self._user_mask(self.inputs.aif_mask, "AIF mask", scan),
            vof_mask=None if user_curves["vof"] is not None else self._user_mask(self.inputs.vof_mask, "VOF mask", scan),
            n_aif_voxels=self.inputs.n_aif_voxels,
            n_vof_voxels=self.inputs.n_vof_voxels,
            min_vein_delay=self.inputs.min_vein_delay,
            correct_partial_volume=self.inputs.correct_partial_volume,
            allow_downscaling=self.inputs.allow_downscaling,
            censored_frames=_censored_frames(self.inputs.motion_file, times.size, self.inputs.in_file),
        )
        for message in choice.warnings:
            warnings.warn(f"{self.inputs.in_file}: {message}", stacklevel=1)

        prefix = _optional(self.inputs.out_prefix, output_prefix(self.inputs.in_file))
        motion_warning = head_motion_warning(scan.sidecar)
        columns = choice.columns()
        out_file = write_curves_tsv(_out(runtime, derivative_name(prefix, "aif", desc="global", extension=".tsv")), columns)
        sidecar = {
            **choice.sidecar(),
            "ResampledToUniformGrid": bool(resampled),
            **({} if motion_warning is None else {"HeadMotionWarning": motion_warning}),
            **provenance(self.inputs.in_file, self.inputs.brain_mask),
        }
        out_json = write_sidecar(out_file, sidecar)
        from ..viz import plot_vascular_functions

        out_png = plot_vascular_functions(
            _out(runtime, derivative_name(prefix, "aif", desc="global", extension=".png")),
            times,
            {k: v for k, v in columns.items() if k != "time"},
            _figure_background(data, [choice.aif_voxels, choice.vof_voxels]),
            choice.aif_voxels,
            choice.vof_voxels,
            title=f"{prefix}: AIF ({choice.sources['aif']}), VOF ({choice.sources['vof']}), scale {choice.scale:.2f}",
        )
        labels = choice.label_image(scan.spatial_shape)
        if labels is not None:
            voxels_file = _out(runtime, derivative_name(prefix, "dseg", desc="vascular"))
            write_nifti(voxels_file, labels, scan.affine, scan.header, {"Labels": {"1": "AIF", "2": "VOF"}}, np.uint8)
            self._results["voxels_file"] = voxels_file
        self._results.update(out_file=str(out_file), out_json=str(out_json), out_png=str(out_png),
                             scale=float(choice.scale))
        return runtime


# ----------------------------------------------------------------------------------------------
# GuidedFilter


class _GuidedFilterInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU")
    guidance_file = File(exists=True, desc="3D guidance image in HU (default: the time-averaged series)")
    radius_mm = traits.Float(
        filtering.RADIUS_MM, usedefault=True,
        desc="in-plane window radius in mm, rounded to voxels (at least 1); the paper's 2 voxels of 0.94 mm",
    )
    radius = traits.Int(desc="window radius in voxels; replaces radius_mm (the paper: 2)")
    eps = traits.Float(filtering.EPS, usedefault=True, desc="regularisation on the guidance normalised to [0, 1]")
    mode = traits.Enum("2d", "3d", usedefault=True, desc="in-plane per slice (paper) or 3D windows")
    guidance_window = traits.Tuple(filtering.GUIDANCE_WINDOW_HU, traits.Float, traits.Float, usedefault=True,
        desc="HU window mapped onto [0, 1] for the guidance",
    )
    mask_file = File(exists=True, desc="3D mask (the brain): the frames are filtered only within its in-plane bounding "
                     "box (per chunk of slices; exactly the whole-image values there) and passed on unfiltered "
                     "outside it")
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    out_prefix = traits.Str(desc="output file-name prefix")


class _GuidedFilterOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="filtered 4D series (float32, HU)")


class GuidedFilter(SimpleInterface):
    """Guided filter (He et al. 2013) of every frame, guided by the time-averaged scan.

    Defaults of Zeng et al. (2025): eps 0.01 on the guidance normalised to
    [0, 1] over ``guidance_window`` HU, and their radius of 2 voxels given in
    millimetres (1.88 mm: 2 voxels of their data's mean in-plane size), so that
    the window spans the same distance on any grid: 2 voxels at 0.79-1.09 mm,
    1 voxel at 1.9-4 mm. ``radius`` sets it in voxels instead.

    Examples
    --------
    >>> GuidedFilter().inputs.radius_mm, GuidedFilter().inputs.eps
    (1.88, 0.01)
    """

    input_spec = _GuidedFilterInputSpec
    output_spec = _GuidedFilterOutputSpec

    def _run_interface(self, runtime):
        scan = load_ctp(self.inputs.in_file, frame_interval=_optional(self.inputs.frame_interval), lazy=True)
        guidance = None
        region = None
        if isdefined(self.inputs.mask_file):
            region = load_mask(self.inputs.mask_file, scan.spatial_shape, scan.affine, "mask")
        if isdefined(self.inputs.guidance_file):
            img, guidance = load_nifti(self.inputs.guidance_file, "guidance image")
            guidance = np.asarray(guidance, np.float32)
            if guidance.shape != scan.spatial_shape:
                raise InputError(
                    f"The guidance image {self.inputs.guidance_file} has shape {guidance.shape} but the scan has "
                    f"{scan.spatial_shape}; give a 3D image on the scan's grid."
                )
        voxel_size = tuple(float(v) for v in scan.header.get_zooms()[:3])
        if isdefined(self.inputs.radius):
            radius = self.inputs.radius
        else:
            try:
                radius = filtering.radius_in_voxels(self.inputs.radius_mm, voxel_size)
            except ValueError as err:
                raise InputError(
                    f"{self.inputs.in_file}: {err} Fix the voxel size in the NIfTI header or give radius in voxels."
                ) from None
        chunks = filtering.guided_filter_chunks(
            scan.data, guidance, radius, self.inputs.eps, self.inputs.mode, self.inputs.guidance_window, region
        )
        prefix = _optional(self.inputs.out_prefix, output_prefix(self.inputs.in_file))
        sidecar = {
            **scan.sidecar,
            "GuidedFilter": {
                "RadiusVoxels": radius,
                "RadiusMm": None if isdefined(self.inputs.radius) else self.inputs.radius_mm,
                "VoxelSizeMm": list(voxel_size),
                "Epsilon": self.inputs.eps,
                "EpsilonRelativeTo": "guidance normalised to [0, 1] over GuidanceWindowHU",
                "GuidanceWindowHU": list(self.inputs.guidance_window),
                "Mode": self.inputs.mode,
                "Guidance": "user image" if guidance is not None else "time-averaged series",
                "FilteredRegion": "everywhere" if region is None else "the mask's in-plane bounding box per chunk of "
                "slices; unfiltered outside it",
            },
            **provenance(self.inputs.in_file, *([self.inputs.mask_file] if region is not None else [])),
        }
        out_file = _out(runtime, derivative_name(prefix, "ctp", extension=SERIES_EXTENSION))
        with SliceWriter(out_file, scan.data.shape, scan.affine, scan.header, sidecar) as out:
            for z0, block in chunks:
                out.write_slices(z0, block)
        self._results["out_file"] = out_file
        return runtime
