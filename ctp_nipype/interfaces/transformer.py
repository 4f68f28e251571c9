"""Nipype interface to the perfusion Transformer (Zeng et al. 2025)."""

from __future__ import annotations

import os

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ._curves import load_prepared_curves
from ..io import output_prefix, provenance, write_perfusion_maps
from ..perfusion.constants import KAPPA_H, RHO


class _TransformerPerfusionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="preprocessed 4D CTP series in HU (x, y, z, t)")
    aif_file = File(
        exists=True,
        mandatory=True,
        desc="TSV with an 'aif' column in HU (baseline included), one row per frame; optional 'time' column",
    )
    aif_column = traits.Str(
        "aif", usedefault=True, desc="column of aif_file to use, e.g. 'aif_corrected' (partial-volume corrected)"
    )
    mask_file = File(exists=True, desc="3D brain mask: only these voxels are run through the network (default all)")
    weights = File(exists=True, desc="network weights (.safetensors); default the weights shipped in the package")
    device = traits.Str("auto", usedefault=True, desc="'auto' (CUDA if present), 'cpu' or 'cuda'")
    batch_size = traits.Int(desc="voxels per forward pass (default sized to the device and the number of frames)")
    kappa_h = traits.Float(KAPPA_H, usedefault=True, desc="hematocrit factor kappa_H")
    rho = traits.Float(RHO, usedefault=True, desc="brain tissue density in g/ml")
    frame_interval = traits.Float(desc="frame interval in seconds, used only when no other timing source exists")
    n_baseline_frames = traits.Int(desc="pre-bolus frames for the baseline (default: detected from the AIF)")
    out_prefix = traits.Str(desc="output file-name prefix (default: input name without _ctp and extension)")
    progress = traits.Bool(False, usedefault=True, desc="show a progress bar")


class _TransformerPerfusionOutputSpec(TraitedSpec):
    cbf = File(exists=True, desc="CBF map, ml/100 g/min")
    cbv = File(exists=True, desc="CBV map, ml/100 g")
    mtt = File(exists=True, desc="MTT map, s")
    bad = File(exists=True, desc="bolus arrival delay map, s")
    residue = File(exists=True, desc="4D flow-scaled residue function, 1/s")
    localaif = File(exists=True, desc="4D local arterial input function, HU above baseline")


class TransformerPerfusion(SimpleInterface):
    """Perfusion maps, local AIF and residue functions from the perfusion Transformer.

    Reads the series and the global AIF, converts both to concentration
    (baseline from the AIF's bolus arrival), resamples a non-uniform series to
    a uniform grid, runs :func:`ctp_nipype.nn.inference.estimate_curves` on the
    masked voxels and writes
    ``<prefix>_desc-transformer_{cbf,cbv,mtt,bad,residue,localaif}.nii.gz``
    with JSON sidecars.

    Examples
    --------
    >>> node = TransformerPerfusion(device="cpu")
    >>> node.inputs.kappa_h
    0.73
    """

    input_spec = _TransformerPerfusionInputSpec
    output_spec = _TransformerPerfusionOutputSpec

    def _run_interface(self, runtime):
        from ..nn.inference import estimate_curves, resolve_device
        from ..nn.weights import SHIPPED_WEIGHTS, load_model

        scan, mask, curves = load_prepared_curves(self.inputs)
        device = resolve_device(self.inputs.device)
        weights = self.inputs.weights if isdefined(self.inputs.weights) else None
        model = load_model(weights, device)
        estimates = estimate_curves(
            curves.aif,
            curves.tissue,
            curves.frame_times,
            device=device,
            batch_size=self.inputs.batch_size if isdefined(self.inputs.batch_size) else None,
            kappa_h=self.inputs.kappa_h,
            rho=self.inputs.rho,
            progress=self.inputs.progress,
            model=model,
        )
        maps = {name: estimates[key] for name, key in (("cbf", "cbf"), ("cbv", "cbv"), ("mtt", "mtt"), ("bad", "bad"),
                                                        ("residue", "residue"), ("localaif", "local_aif"))}
        metadata = {
            "Method": "transformer",
            "KappaH": self.inputs.kappa_h,
            "TissueDensity": self.inputs.rho,
            "CBVDefinition": "100 * kappa_H / rho * integral of the network's residue K (trapezoidal)",
            "Weights": os.path.abspath(weights) if weights else f"shipped ({SHIPPED_WEIGHTS.name})",
            "WeightsCard": getattr(model, "card", {}),
            "Device": str(device),
            "AIFColumn": self.inputs.aif_column,
            "MaskedVoxels": int(np.count_nonzero(mask)),
            "FlaggedVoxels": int(np.count_nonzero(estimates["flagged"])),
            **curves.describe(),
            "TimingSource": scan.timing.source,
            **provenance(self.inputs.in_file, self.inputs.aif_file),
        }
        prefix = self.inputs.out_prefix if isdefined(self.inputs.out_prefix) else output_prefix(self.inputs.in_file)
        written = write_perfusion_maps(runtime.cwd, prefix, "transformer", maps, scan.affine, scan.header, metadata,
                                       mask=mask)
        self._results.update({name: str(path) for name, path in written.items()})
        return runtime
