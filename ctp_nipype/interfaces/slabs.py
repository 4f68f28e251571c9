"""Split a series into slabs of slices (optionally binned in-plane) and join the maps computed on them.

``SplitSlabs`` writes each slab as an uncompressed NIfTI with its brain mask and the series' sidecar (its
timing), so that the deconvolution interfaces (:class:`~ctp_nipype.interfaces.svd.SVDDeconvolution`,
:class:`~ctp_nipype.interfaces.transformer.TransformerPerfusion`) run on each slab unchanged, as Nipype
MapNodes that MultiProc (or SLURM) runs in parallel. ``JoinSlabs`` puts a method's slab maps back together on
the scan's grid with the names and sidecars those interfaces write for a whole scan. Both stream the 4D
series frame by frame (:mod:`ctp_nipype.slabs`): neither holds a whole 4D series in memory.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack

import nibabel as nb
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

from ..io import InputError, load_mask, map_filename, read_json, sidecar_path, write_json, write_nifti
from ..perfusion import working_grid
from ..slabs import FrameWriter, iter_frames, plan_slabs

#: the sidecar fields that count voxels: summed over the slabs when they are joined
_SUMMED_FIELDS = ("FlaggedVoxels", "MaskedVoxels")


class _SplitSlabsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D series (x, y, z, t) with its JSON sidecar (timing)")
    mask_file = File(exists=True, mandatory=True, desc="3D brain mask on the series' grid")
    n_slabs = traits.Int(0, usedefault=True, desc="slabs to cut (0: from the available memory and n_procs)")
    n_procs = traits.Int(1, usedefault=True, desc="processes that run the slabs: at least this many slabs")
    working_voxel_mm = traits.Float(desc="bin in-plane to about this voxel size (mm) before deconvolution")


class _SplitSlabsOutputSpec(TraitedSpec):
    slab_files = traits.List(File(exists=True), desc="4D slabs (uncompressed NIfTI), each with its sidecar")
    mask_files = traits.List(File(exists=True), desc="the brain mask of each slab (on its grid)")
    plan_file = File(exists=True, desc="JSON: the slabs' slice ranges, the in-plane bin factors, the scan's shape")


class SplitSlabs(SimpleInterface):
    """Cut a 4D series into slabs of slices holding about as many brain voxels each (and bin them in-plane).

    The number of slabs follows the memory available (:func:`ctp_nipype.slabs.plan_slabs`) unless
    ``n_slabs`` is given. With ``working_voxel_mm`` every in-plane block of about that size becomes one
    voxel, the mean of its brain voxels (:func:`ctp_nipype.perfusion.working_grid.bin_in_plane`).

    Examples
    --------
    >>> SplitSlabs().inputs.n_slabs
    0
    """

    input_spec = _SplitSlabsInputSpec
    output_spec = _SplitSlabsOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        if len(img.shape) != 4:
            raise InputError(f"{self.inputs.in_file} has shape {img.shape}; SplitSlabs needs a 4D series.")
        shape, n_frames = img.shape[:3], img.shape[3]
        mask = load_mask(self.inputs.mask_file, shape, img.affine, "brain mask")
        voxel_mm = img.header.get_zooms()[:3]
        factors = (1, 1)
        if isdefined(self.inputs.working_voxel_mm):
            try:
                factors = working_grid.bin_factors(voxel_mm, self.inputs.working_voxel_mm)
            except ValueError as err:
                raise InputError(f"--working-voxel-mm: {err}") from None
        binned_xy = working_grid.binned_shape(shape, factors)[:2]
        bounds = plan_slabs(
            mask.sum(axis=(0, 1)), n_frames, n_procs=max(1, self.inputs.n_procs),
            n_slabs=self.inputs.n_slabs or None, slice_voxels=int(np.prod(binned_xy)),
        )
        sidecar = read_json(sidecar_path(self.inputs.in_file)) if sidecar_path(self.inputs.in_file).exists() else {}
        slab_files, mask_files, writers = [], [], []
        for index, (z0, z1) in enumerate(bounds):
            affine = working_grid.binned_affine(img.affine, factors, z0)
            header = img.header.copy()
            header.set_data_shape(binned_xy + (z1 - z0, n_frames))
            header.set_zooms((voxel_mm[0] * factors[0], voxel_mm[1] * factors[1], voxel_mm[2],
                              img.header.get_zooms()[3]))
            binned_mask = working_grid.bin_in_plane(mask[:, :, z0:z1], mask[:, :, z0:z1], factors)[1]
            mask_files.append(os.path.join(runtime.cwd, f"slab-{index:03d}_mask.nii"))
            write_nifti(mask_files[-1], binned_mask.astype(np.uint8), affine, header, dtype=np.uint8)
            slab_files.append(os.path.join(runtime.cwd, f"slab-{index:03d}_ctp.nii"))
            slab_sidecar = {**sidecar, "Slab": {"FirstSlice": z0, "StopSlice": z1, "BinFactors": list(factors)}}
            writers.append(FrameWriter(slab_files[-1], binned_xy + (z1 - z0, n_frames), affine, header, slab_sidecar))
        with ExitStack() as stack:
            outputs = [stack.enter_context(writer) for writer in writers]
            for frame in iter_frames(self.inputs.in_file):
                for writer, (z0, z1) in zip(outputs, bounds):
                    part = frame[:, :, z0:z1]
                    if factors != (1, 1):
                        part = working_grid.bin_in_plane(part, mask[:, :, z0:z1], factors)[0]
                    writer.write(part)
        plan_file = os.path.join(runtime.cwd, "slabs.json")
        write_json(plan_file, {
            "Slabs": [list(b) for b in bounds],
            "BinFactors": list(factors),
            "ScanShape": list(img.shape),
            "ScanVoxelSizeMm": [float(v) for v in voxel_mm],
            "WorkingVoxelSizeMm": [float(voxel_mm[0] * factors[0]), float(voxel_mm[1] * factors[1]),
                                   float(voxel_mm[2])],
        })
        self._results.update(slab_files=slab_files, mask_files=mask_files, plan_file=plan_file)
        return runtime


class _JoinSlabsInputSpec(BaseInterfaceInputSpec):
    map_files = InputMultiObject(
        traits.List(File(exists=True)), mandatory=True,
        desc="per map, the slabs' files in slab order (a MapNode's outputs: [[cbf of slab 0, 1, ...], ...])",
    )
    plan_file = File(exists=True, mandatory=True, desc="SplitSlabs' plan_file")
    template_file = File(exists=True, mandatory=True, desc="the series that was split (grid, header)")
    mask_file = File(exists=True, mandatory=True, desc="the brain mask on the scan's grid")
    sources = InputMultiObject(File(exists=True), desc="the whole-scan inputs named in the sidecars' Sources")
    method = traits.Str(mandatory=True, desc="the method, as in the slabs' file names (ssvd, transformer, ...)")
    out_prefix = traits.Str(mandatory=True, desc="output file-name prefix")


class _JoinSlabsOutputSpec(TraitedSpec):
    cbf = File(desc="CBF map, ml/100 g/min")
    cbv = File(desc="CBV map, ml/100 g")
    mtt = File(desc="MTT map, s")
    tmax = File(desc="Tmax map, s (SVD methods)")
    bad = File(desc="bolus arrival delay map, s (network)")
    residue = File(desc="4D flow-scaled residue function, 1/s")
    localaif = File(desc="4D local arterial input function (network)")
    flagged_voxels = traits.Int(desc="voxels flagged by the fit, all slabs together")


class JoinSlabs(SimpleInterface):
    """A method's slab maps on the scan's grid, with the names and sidecars of a whole-scan run.

    3D maps are stacked along z; 4D curves are written frame by frame. Binned slabs are copied back onto
    the brain voxels of their blocks (:func:`ctp_nipype.perfusion.working_grid.expand_in_plane`), and the
    sidecars say so (``WorkingGrid``). ``FlaggedVoxels`` and ``MaskedVoxels`` are summed over the slabs.

    Examples
    --------
    >>> JoinSlabs(method="ssvd").inputs.method
    'ssvd'
    """

    input_spec = _JoinSlabsInputSpec
    output_spec = _JoinSlabsOutputSpec

    def _run_interface(self, runtime):
        plan = read_json(self.inputs.plan_file)
        bounds = [tuple(b) for b in plan["Slabs"]]
        factors = tuple(plan["BinFactors"])
        template = nb.load(self.inputs.template_file)
        shape = template.shape[:3]
        mask = load_mask(self.inputs.mask_file, shape, template.affine, "brain mask")
        name_pattern = re.compile(rf"_desc-{re.escape(self.inputs.method)}_([a-z]+)\.nii(\.gz)?$")
        for files in self.inputs.map_files:
            files = list(files)
            if len(files) != len(bounds):
                raise ValueError(f"{len(files)} slab files for {len(bounds)} slabs: {files[:2]}...")
            found = name_pattern.search(os.path.basename(files[0]))
            if found is None:
                raise ValueError(f"{files[0]} is not a {self.inputs.method} map.")
            name = found.group(1)
            sidecars = [read_json(sidecar_path(f)) if sidecar_path(f).exists() else {} for f in files]
            sidecar = dict(sidecars[0])
            for field in _SUMMED_FIELDS:
                if field in sidecar:
                    sidecar[field] = int(sum(s.get(field, 0) for s in sidecars))
            if isdefined(self.inputs.sources):
                sidecar["Sources"] = [os.path.abspath(s) for s in self.inputs.sources]
            sidecar["Slabs"] = {"Count": len(bounds), "SliceRanges": [list(b) for b in bounds]}
            if factors != (1, 1):
                sidecar["WorkingGrid"] = {
                    "VoxelSizeMm": plan["WorkingVoxelSizeMm"],
                    "BinFactors": list(factors),
                    "Method": "each in-plane block the mean of its brain voxels before deconvolution; the map is on "
                    "the scan's grid, every brain voxel holding its block's value",
                }
            path = os.path.join(runtime.cwd, map_filename(self.inputs.out_prefix, self.inputs.method, name))
            first = nb.load(files[0])
            n_frames = first.shape[3] if len(first.shape) == 4 else None
            full_shape = shape + ((n_frames,) if n_frames else ())
            with FrameWriter(path, full_shape, template.affine, template.header, sidecar) as out:
                frames = [iter_frames(f) for f in files]
                for _ in range(n_frames or 1):
                    volume = np.zeros(shape, np.float32, order="F")  # NIfTI's layout: written in one copy
                    for (z0, z1), source in zip(bounds, frames):
                        part = next(source)
                        if factors != (1, 1):
                            part = working_grid.expand_in_plane(part, mask[:, :, z0:z1], factors)
                        volume[:, :, z0:z1] = part
                    out.write(volume)
            self._results[name] = path
            if "FlaggedVoxels" in sidecar:
                self._results["flagged_voxels"] = sidecar["FlaggedVoxels"]
        return runtime

