"""Writing derivatives into a BIDS derivatives folder."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..bids import source_uris
from ..io import copy_atomic, read_json, sidecar_path, write_json


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="derivatives root (holds dataset_description.json)")
    subdir = traits.Str(mandatory=True, desc="folder below the root, e.g. 'sub-01/ses-01/perf'")
    in_files = InputMultiObject(
        File(exists=True), mandatory=True, desc="files already named per the conventions (their JSON sidecars follow)"
    )


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_files = OutputMultiObject(File(exists=True), desc="the written derivatives")


class DerivativesDataSink(SimpleInterface):
    """Copy named outputs (and their JSON sidecars) into the derivatives tree, atomically.

    The pipeline's interfaces already name their files per the conventions
    (``sub-01_ses-01_desc-osvd_cbf.nii.gz``), so the sink keeps the names and
    places them under ``<base_directory>/<subdir>``. Each file is copied to a
    temporary name and renamed, the sidecar before its image, so a killed run
    never leaves a derivative that looks complete.

    The ``Sources`` of every JSON it publishes (sidecars, lesion and statistics JSONs) become BIDS
    URIs on the way (:func:`ctp_nipype.bids.source_uris`): ``bids:raw:...`` for the scan of the linked
    raw dataset, ``bids::<subdir>/<name>`` for derivatives, never a path into the work directory.
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec

    def _publish(self, source, destination):
        if source.suffix == ".json":
            payload = read_json(source)
            if isinstance(payload, dict) and "Sources" in payload:
                payload["Sources"] = source_uris(payload["Sources"], self.inputs.base_directory, self.inputs.subdir)
                return write_json(destination, payload)
        return copy_atomic(source, destination)

    def _run_interface(self, runtime):
        target = Path(self.inputs.base_directory) / self.inputs.subdir
        written = []
        for name in self.inputs.in_files:
            source = Path(name)
            side = sidecar_path(source)
            if side.exists() and side != source:
                self._publish(side, target / side.name)
            written.append(str(self._publish(source, target / source.name)))
        self._results["out_files"] = written
        return runtime
