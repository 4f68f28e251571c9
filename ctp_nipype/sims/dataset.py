"""The digital brain phantom written as a BIDS dataset with its ground truth (``ctp-phantom``, the demo,
tests and benchmarks call :func:`write_phantom_dataset` or :func:`write_subject`).

Layout (subject ``k`` uses seed ``SEED + k - 1``, so ``seed=3`` makes sub-01 equal to
``make_phantom(seed=3)``)::

    OUT_DIR/dataset_description.json
    OUT_DIR/sub-01/ses-01/sub-01_ses-01_ctp.nii.gz     4D HU scan
    OUT_DIR/sub-01/ses-01/sub-01_ses-01_ctp.json       FrameTimesStart (s), FrameDuration (s), ...
    OUT_DIR/derivatives/phantom-truth/dataset_description.json          (DatasetType derivative)
    OUT_DIR/derivatives/phantom-truth/sub-01/ses-01/perf/
        sub-01_ses-01_desc-truth_{cbf,cbv,mtt,bad,dispersion}.nii.gz (+ .json with Units)
        sub-01_ses-01_desc-truth_dseg.nii.gz (+ .json with the label codes)
        sub-01_ses-01_desc-truth_aif.tsv     columns time, aif, vof (HU, blood baseline included)
        sub-01_ses-01_desc-truth_motion.tsv  with motion: time, trans_{x,y,z}_mm, rot_{x,y,z}_deg
        sub-01_ses-01_desc-truth_parameters.json  every value the phantom was built with

``bad`` is the bolus arrival delay of the local AIF relative to the global
AIF (the phantom's delay map), in the conventions' name for it. File I/O is
imported lazily, so :mod:`ctp_nipype.sims` stays importable without nibabel.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..bids import derivative_name

#: BIDS version the dataset descriptions declare
BIDS_VERSION = "1.10.0"
TRUTH_PIPELINE = "phantom-truth"


def _generated_by():
    from ..io import generated_by

    return generated_by("ctp_nipype ctp-phantom")


def _scan_header(phantom):
    import nibabel as nb

    from ..perfusion.timing import is_uniform

    header = nb.Nifti1Header()
    header.set_data_shape(phantom.hu.shape)
    steps = np.diff(phantom.frame_times)
    # pixdim[4] only for uniform timing; 0 otherwise, so that nothing mistakes it for the frame interval
    frame_interval = float(steps.mean()) if is_uniform(phantom.frame_times) else 0.0
    header.set_zooms(tuple(phantom.voxel_size_mm) + (frame_interval,))
    header.set_xyzt_units("mm", "sec")
    return header


def _map_header():
    import nibabel as nb

    header = nb.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    return header


def write_subject(phantom, out_dir, subject, session="01"):
    """Write one phantom's scan into a BIDS dataset and its truth into ``derivatives/phantom-truth``.

    Parameters
    ----------
    phantom : ctp_nipype.sims.phantom.Phantom
    out_dir : Path
        Root of the BIDS dataset.
    subject, session : str
        Labels without the ``sub-`` / ``ses-`` prefixes.

    Returns
    -------
    Path
        The scan written.
    """
    from ..io import write_curves_tsv, write_json, write_nifti
    from ..perfusion.constants import UNITS

    out_dir = Path(out_dir)
    prefix = f"sub-{subject}_ses-{session}"
    times = phantom.frame_times
    durations = np.append(np.diff(times), np.diff(times)[-1])
    scan = write_nifti(
        out_dir / f"sub-{subject}" / f"ses-{session}" / derivative_name(prefix, "ctp"),
        phantom.hu,
        phantom.affine,
        header=_scan_header(phantom),
        sidecar={
            "Modality": "CT",
            "Manufacturer": "ctp_nipype digital brain phantom",
            "Units": "HU",
            "FrameTimesStart": times.tolist(),
            "FrameDuration": durations.tolist(),
            "SliceThickness": phantom.voxel_size_mm[2],
            "ContrastBolusIngredient": "IODINE",
            "PhantomSeed": phantom.parameters["seed"],
            "PhantomSize": phantom.parameters["size"],
        },
    )
    truth = out_dir / "derivatives" / TRUTH_PIPELINE / f"sub-{subject}" / f"ses-{session}" / "perf"
    common = {"Method": "truth", "PhantomSeed": phantom.parameters["seed"],
              "Sources": [f"bids:raw:{scan.relative_to(out_dir).as_posix()}"]}
    maps = {
        "cbf": (phantom.cbf, "Cerebral blood flow of the perfused tissue (0 elsewhere)."),
        "cbv": (phantom.cbv, "Cerebral blood volume, full-window CBF * MTT / 60 (0 outside perfused tissue)."),
        "mtt": (phantom.mtt, "Mean transit time = 60 CBV / CBF (0 outside perfused tissue)."),
        "bad": (phantom.delay, "Bolus arrival delay: shift of the local AIF relative to the global AIF."),
        "dispersion": (phantom.dispersion, "T_A of the exponential vascular transport function of the local AIF."),
    }
    for name, (values, description) in maps.items():
        write_nifti(
            truth / derivative_name(prefix, name, desc="truth"),
            values,
            phantom.affine,
            header=_map_header(),
            sidecar=dict(common, Units=UNITS.get(name, "s"), Description=description),
        )
    write_nifti(
        truth / derivative_name(prefix, "dseg", desc="truth"),
        phantom.labels,
        phantom.affine,
        header=_map_header(),
        dtype=np.uint8,
        sidecar=dict(
            common,
            Description="Label map of the phantom.",
            Labels={str(code): name for code, name in phantom.parameters["labels"].items()},
        ),
    )
    write_curves_tsv(truth / derivative_name(prefix, "aif", desc="truth", extension=".tsv"), {"time": times, "aif": phantom.aif, "vof": phantom.vof})
    write_json(
        truth / derivative_name(prefix, "aif", desc="truth", extension=".json"),
        dict(
            common,
            Description=(
                "True global AIF (an artery voxel full of blood) and VOF, HU with the blood baseline. "
                "The artery voxels of the scan hold ArteryPartialVolume of this AIF's concentration."
            ),
            Units={"time": "s", "aif": "HU", "vof": "HU"},
            BloodBaselineHU=phantom.blood_baseline_hu,
            ArteryPartialVolume=phantom.artery_partial_volume,
        ),
    )
    if phantom.motion_parameters is not None:
        from ..perfusion.motion import PARAMETER_NAMES

        columns = {"time": times}
        columns.update({name: phantom.motion_parameters[:, i] for i, name in enumerate(PARAMETER_NAMES)})
        write_curves_tsv(truth / derivative_name(prefix, "motion", desc="truth", extension=".tsv"), columns)
        write_json(
            truth / derivative_name(prefix, "motion", desc="truth", extension=".json"),
            dict(
                common,
                Description=(
                    "Rigid head motion of each frame relative to frame 0, in the convention of "
                    "ctp_nipype.perfusion.motion (what its registration should report): rotation "
                    "Rz Ry Rx about the centre of the volume, then translation, along the array axes."
                ),
                Units={"time": "s", **{n: ("mm" if n.endswith("_mm") else "degrees") for n in PARAMETER_NAMES}},
                CentreMM=phantom.parameters["motion_centre_mm"],
            ),
        )
    write_json(truth / derivative_name(prefix, "parameters", desc="truth", extension=".json"), phantom.parameters)
    return scan


def write_phantom_dataset(
    out_dir, subjects=1, seed=0, size="small", non_uniform_timing=False, motion=False, noise_sd_hu=8.0, log=None
):
    """Build ``subjects`` phantoms (seeds ``seed``, ``seed + 1``, ...) and write them as a BIDS dataset.

    Returns
    -------
    list of Path
        The scans written.
    """
    from ..io import write_json
    from ..sims.phantom import make_phantom

    if subjects < 1:
        raise ValueError(f"subjects must be at least 1, got {subjects}.")
    if subjects > 99:
        raise ValueError(f"subjects must be at most 99 (two-digit labels), got {subjects}.")
    out_dir = Path(out_dir)
    write_json(
        out_dir / "dataset_description.json",
        {
            "Name": "ctp_nipype digital brain phantom",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "GeneratedBy": _generated_by(),
        },
    )
    write_json(
        out_dir / "derivatives" / TRUTH_PIPELINE / "dataset_description.json",
        {
            "Name": "ctp_nipype digital brain phantom: ground truth",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": _generated_by(),
            "DatasetLinks": {"raw": "../.."},
            "SourceDatasets": [{"URL": "bids:raw"}],
        },
    )
    scans = []
    for index in range(1, subjects + 1):
        start = time.monotonic()
        phantom = make_phantom(
            size=size,
            seed=seed + index - 1,
            non_uniform_timing=non_uniform_timing,
            motion=motion,
            noise_sd_hu=noise_sd_hu,
        )
        scans.append(write_subject(phantom, out_dir, f"{index:02d}"))
        if log is not None:
            log(f"sub-{index:02d}: seed {seed + index - 1}, {phantom.hu.shape} in {time.monotonic() - start:.1f} s")
    return scans
