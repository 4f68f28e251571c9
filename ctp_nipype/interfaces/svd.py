"""Nipype interface to the SVD deconvolution family (sSVD, cSVD, oSVD)."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ._curves import load_prepared_curves
from ..io import output_prefix, provenance, timing_provenance, write_perfusion_maps
from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.svd import DEFAULT_OI_THRESHOLD, SVDModel
from ..perfusion.triage import DEFAULT_PEAK_INTERPOLATION, PEAK_INTERPOLATIONS


class _SVDDeconvolutionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D CTP series in HU (x, y, z, t)")
    aif_file = File(
        exists=True,
        mandatory=True,
        desc="TSV with an 'aif' column in HU (baseline included), one row per frame; optional 'time' column",
    )
    aif_column = traits.Str(
        "aif", usedefault=True, desc="column of aif_file to use, e.g. 'aif_corrected' (partial-volume corrected)"
    )
    mask_file = File(exists=True, desc="3D mask of the voxels to fit (default: all voxels)")
    method = traits.Enum("osvd", "ssvd", "csvd", usedefault=True, desc="SVD variant")
    threshold = traits.Float(
        desc="relative singular-value threshold (default 0.20 sSVD, 0.10 cSVD; for oSVD the ladder's top)"
    )
    oi_threshold = traits.Float(DEFAULT_OI_THRESHOLD, usedefault=True, desc="oSVD target oscillation index")
    kappa_h = traits.Float(KAPPA_H, usedefault=True, desc="hematocrit factor kappa_H")
    rho = traits.Float(RHO, usedefault=True, desc="brain tissue density in g/ml")
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    n_baseline_frames = traits.Int(desc="pre-bolus frames for the baseline (default: detected from the AIF)")
    peak_interpolation = traits.Enum(
        DEFAULT_PEAK_INTERPOLATION, *PEAK_INTERPOLATIONS, usedefault=True,
        desc="Tmax: the residue's sampled maximum, or a parabola through it and its neighbours",
    )
    out_prefix = traits.Str(desc="output file-name prefix (default: input name without _ctp and extension)")


class _SVDDeconvolutionOutputSpec(TraitedSpec):
    cbf = File(exists=True, desc="CBF map, ml/100 g/min")
    cbv = File(exists=True, desc="CBV map, ml/100 g")
    mtt = File(exists=True, desc="MTT map, s")
    tmax = File(exists=True, desc="Tmax map, s")
    residue = File(exists=True, desc="4D flow-scaled residue function, 1/s")
    flagged_voxels = traits.Int(desc="voxels that could not be fitted (set to 0 or, for oSVD, ladder exhausted)")


class SVDDeconvolution(SimpleInterface):
    """Perfusion maps by SVD deconvolution of every voxel's curve by a global AIF.

    Reads the series and the AIF, converts both to concentration (baseline
    from the AIF's bolus arrival), resamples a non-uniform series to a
    uniform grid, fits :class:`ctp_nipype.perfusion.svd.SVDModel`, and writes
    ``<prefix>_desc-<method>_{cbf,cbv,mtt,tmax,residue}.nii.gz`` with JSON sidecars.

    Examples
    --------
    >>> deconv = SVDDeconvolution(method="csvd")
    >>> deconv.inputs.kappa_h
    0.73
    """

    input_spec = _SVDDeconvolutionInputSpec
    output_spec = _SVDDeconvolutionOutputSpec

    def _run_interface(self, runtime):
        scan, mask, curves = load_prepared_curves(self.inputs)
        model = SVDModel(
            curves.aif,
            curves.frame_times,
            method=self.inputs.method,
            threshold=self.inputs.threshold if isdefined(self.inputs.threshold) else None,
            oi_threshold=self.inputs.oi_threshold,
            kappa_h=self.inputs.kappa_h,
            rho=self.inputs.rho,
            peak_interpolation=self.inputs.peak_interpolation,
        )
        fit = model.fit(curves.tissue)  # the mask's curves (n, T)
        metadata = {
            **model.params,
            **curves.describe(),
            **timing_provenance(scan, curves.resampled),
            "FlaggedVoxels": fit.n_flagged,
            "AIFColumn": self.inputs.aif_column,
            **provenance(self.inputs.in_file, self.inputs.aif_file),
        }
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else output_prefix(self.inputs.in_file)
        written = write_perfusion_maps(
            runtime.cwd,
            prefix,
            self.inputs.method,
            {"cbf": fit.cbf, "cbv": fit.cbv, "mtt": fit.mtt, "tmax": fit.tmax, "residue": fit.residue},
            scan.affine,
            scan.header,
            metadata,
            mask=mask,
        )
        self._results.update({name: str(path) for name, path in written.items()})
        self._results["flagged_voxels"] = fit.n_flagged
        return runtime
