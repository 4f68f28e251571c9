"""Phantom datasets in the ISLES 2018 and ISLES 2024 layouts, with reference maps of known agreement.

Users and tests share these writers: they put a digital brain phantom
(:func:`ctp_nipype.sims.phantom.make_phantom`) where each challenge puts its
scans, under each challenge's file names (see :mod:`ctp_nipype.datasets.isles`
for the layouts and their sources), with "reference software" maps made from
the phantom's truth, so that the agreement ``ctp-compare`` must report is
known exactly:

* :func:`truth_reference_maps`: CBF, CBV, MTT and Tmax of the truth (Tmax of a
  perfect deconvolution against the global AIF is the local AIF's delay, the
  phantom's ``delay``), 0 outside perfused tissue as RAPID writes them.
  Our maps replaced by the truth agree with these with r = 1 and Dice = 1.
* :func:`distort_reference`: the same maps with known distortions: CBF scaled
  (relative CBF, hence the core, unchanged; Pearson and Spearman r still 1),
  Tmax shifted by a constant (r still 1; the reference's Tmax > 6 s region is
  the truth's Tmax > 6 - shift region), a map smoothed (r below 1).
* The DWI/follow-up lesion is the phantom's ischemic core label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .phantom import DEFAULT_TISSUE, PERFUSED_LABELS, PhantomLabel, TissueClass, make_phantom

#: the map names of the SMIR folders of ISLES 2018 (``SMIR.Brain.XX.O.<kind>.<id>``)
ISLES2018_KINDS = {"ctp": "CT_4DPWI", "ct": "CT", "cbf": "CT_CBF", "cbv": "CT_CBV", "mtt": "CT_MTT", "tmax": "CT_Tmax",
                   "lesion": "OT"}
#: what icobrain cva writes outside the brain in ISLES'24's Tmax maps (0 in the other maps)
ICOBRAIN_TMAX_FILL = -30.0


def make_isles_phantom(seed=0, size="small", noise_sd_hu=8.0, lesion_delay_s=8.0):
    """A phantom for the ISLES layouts: uniform 1 s frames (as both datasets' released CTP) and the core and
    penumbra's local AIF delayed by ``lesion_delay_s`` (default 8 s, beyond the clinical Tmax > 6 s, where
    the default phantom's 6 s sits exactly on the threshold).
    """
    tissue = {label: TissueClass(DEFAULT_TISSUE[label].cbf, DEFAULT_TISSUE[label].cbv, lesion_delay_s,
                                 DEFAULT_TISSUE[label].dispersion_s)
              for label in (PhantomLabel.CORE, PhantomLabel.PENUMBRA)}
    return make_phantom(size, seed=seed, noise_sd_hu=noise_sd_hu, tissue=tissue)


def truth_reference_maps(phantom):
    """CBF, CBV, MTT and Tmax (s) of the phantom's truth, 0 outside perfused tissue.

    Returns ``{name: float32 array}``.
    """
    perfused = np.isin(phantom.labels, [int(v) for v in PERFUSED_LABELS])
    maps = {"cbf": phantom.cbf, "cbv": phantom.cbv, "mtt": phantom.mtt, "tmax": phantom.delay}
    return {name: np.where(perfused, values, 0.0).astype(np.float32) for name, values in maps.items()}


def distort_reference(maps, cbf_scale=1.0, tmax_shift_s=0.0, smooth=(), smooth_sigma_voxels=1.0):
    """Reference maps with known distortions, inside the maps' tissue (where CBF > 0); 0 stays 0 outside.

    Parameters
    ----------
    maps : dict
        ``{name: array}`` (e.g. :func:`truth_reference_maps`).
    cbf_scale : float
        CBF multiplied by this.
    tmax_shift_s : float
        Seconds added to Tmax.
    smooth : sequence of str
        Maps smoothed in plane with a Gaussian of ``smooth_sigma_voxels`` (normalised by the smoothed
        tissue mask, so that tissue values do not leak to 0 at the edges).

    Returns
    -------
    dict of float32 arrays
    """
    from scipy import ndimage

    tissue = np.asarray(maps["cbf"]) > 0
    out = {name: np.asarray(values, dtype=np.float64).copy() for name, values in maps.items()}
    out["cbf"][tissue] *= cbf_scale
    out["tmax"][tissue] += tmax_shift_s
    sigma = (smooth_sigma_voxels, smooth_sigma_voxels, 0.0)
    weight = ndimage.gaussian_filter(tissue.astype(float), sigma)
    for name in smooth:
        blurred = ndimage.gaussian_filter(np.where(tissue, out[name], 0.0), sigma)
        out[name] = np.where(tissue, blurred / np.maximum(weight, 1e-6), 0.0)
    return {name: values.astype(np.float32) for name, values in out.items()}


def _nifti(data, affine, time_unit="unknown", frame_interval_s=None, dtype=np.float32):
    import nibabel as nb

    img = nb.Nifti1Image(np.asarray(data).astype(dtype), affine)
    zooms = tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
    if np.ndim(data) == 4:
        zooms = zooms + (float(frame_interval_s or 1.0),)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", time_unit)
    return img


def _save(img, path):
    import nibabel as nb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.save(img, str(path))
    return path


def write_isles2018_case(root, case_number, phantom, reference=None, lesion=True, first_id=None):
    """Write one phantom as ISLES 2018's ``case_<N>`` (SMIR export), maps and lesion included.

    Layout written::

        root/case_<N>/SMIR.Brain.XX.O.CT.<id>/SMIR.Brain.XX.O.CT.<id>.nii          baseline (frame 0)
        root/case_<N>/SMIR.Brain.XX.O.CT_4DPWI.<id>/SMIR.Brain.XX.O.CT_4DPWI.<id>.nii  4D HU, int16
        root/case_<N>/SMIR.Brain.XX.O.CT_{CBF,CBV,MTT,Tmax}.<id>/....nii             reference maps
        root/case_<N>/SMIR.Brain.XX.O.OT.<id>/SMIR.Brain.XX.O.OT.<id>.nii          DWI lesion (training only)

    The 4D PWI's header has no time unit (the loader then uses the dataset's documented 1 s frames; the
    phantom's frames are 1 s apart).

    Parameters
    ----------
    root : Path
        The folder holding the ``case_*`` folders (ISLES 2018's ``TRAINING``).
    case_number : int
    phantom : Phantom
        With uniform 1 s frames.
    reference : dict, optional
        ``{cbf, cbv, mtt, tmax}`` arrays; default :func:`truth_reference_maps`.
    lesion : bool
        Write the ``OT`` lesion (the phantom's core); ISLES 2018's test cases have none.
    first_id : int, optional
        SMIR id of the first file (default ``345500 + 10 * case_number``).

    Returns
    -------
    Path
        The case folder.
    """
    steps = np.diff(phantom.frame_times)
    if not np.allclose(steps, 1.0):
        raise ValueError("ISLES 2018's 4D PWI are resampled to 1 s frames; make the phantom with uniform 1 s frames.")
    reference = truth_reference_maps(phantom) if reference is None else reference
    case = Path(root) / f"case_{int(case_number)}"
    smir_id = 345500 + 10 * int(case_number) if first_id is None else int(first_id)
    images = {
        "ct": _nifti(phantom.hu[..., 0], phantom.affine, dtype=np.int16),
        "ctp": _nifti(np.round(phantom.hu), phantom.affine, dtype=np.int16),
        **{name: _nifti(reference[name], phantom.affine) for name in ("cbf", "cbv", "mtt", "tmax")},
    }
    if lesion:
        images["lesion"] = _nifti(phantom.labels == PhantomLabel.CORE, phantom.affine, dtype=np.uint8)
    for offset, (key, img) in enumerate(images.items()):
        name = f"SMIR.Brain.XX.O.{ISLES2018_KINDS[key]}.{smir_id + offset}"
        _save(img, case / name / f"{name}.nii")
    return case


def write_isles2024_case(root, number, phantom, reference=None, flip_ncct_x=True):
    """Write one phantom as ISLES'24's ``sub-stroke<NNNN>`` (the Zenodo v7 training layout).

    Layout written (``<s>`` = ``sub-stroke<NNNN>``)::

        root/raw_data/<s>/ses-01/<s>_ses-01_ctp.nii.gz                 4D HU (pixdim[4] 1 s)
        root/raw_data/<s>/ses-01/<s>_ses-01_ncct.nii.gz                frame 0
        root/raw_data/<s>/ses-01/perfusion-maps/<s>_ses-01_{cbf,cbv,mtt,tmax}.nii.gz
        root/derivatives/<s>/ses-01/<s>_ses-01_space-ncct_ctp.nii.gz
        root/derivatives/<s>/ses-01/perfusion-maps/<s>_ses-01_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz
        root/derivatives/<s>/ses-02/<s>_ses-02_space-ncct_lesion-msk.nii.gz  follow-up lesion (the core)

    The "NCCT space" is the phantom's grid stored with its x axis reversed
    (``flip_ncct_x``): the same world positions in another voxel order, so that
    bringing a map from one space to the other is exact and any orientation
    mistake shows. Tmax is :data:`ICOBRAIN_TMAX_FILL` outside perfused tissue,
    as icobrain cva writes it.

    Returns
    -------
    str
        The subject label (``stroke<NNNN>``).
    """
    reference = truth_reference_maps(phantom) if reference is None else dict(reference)
    tissue = np.asarray(reference["cbf"]) > 0
    reference["tmax"] = np.where(tissue, reference["tmax"], ICOBRAIN_TMAX_FILL).astype(np.float32)
    subject = f"stroke{int(number):04d}"
    s = f"sub-{subject}"
    root = Path(root)
    raw = root / "raw_data" / s / "ses-01"
    deriv = root / "derivatives" / s
    step = float(np.diff(phantom.frame_times).mean())
    uniform = np.allclose(np.diff(phantom.frame_times), step)
    ctp = np.round(phantom.hu)
    _save(_nifti(ctp, phantom.affine, "sec", step if uniform else None, np.int16), raw / f"{s}_ses-01_ctp.nii.gz")
    _save(_nifti(phantom.hu[..., 0], phantom.affine, dtype=np.int16), raw / f"{s}_ses-01_ncct.nii.gz")
    for name in ("cbf", "cbv", "mtt", "tmax"):
        _save(_nifti(reference[name], phantom.affine), raw / "perfusion-maps" / f"{s}_ses-01_{name}.nii.gz")

    if flip_ncct_x:
        flip = np.eye(4)
        flip[0, 0] = -1.0
        flip[0, 3] = phantom.hu.shape[0] - 1
        ncct_affine = phantom.affine @ flip

        def to_ncct(values):
            return np.asarray(values)[::-1]
    else:
        ncct_affine = phantom.affine

        def to_ncct(values):
            return np.asarray(values)

    _save(_nifti(to_ncct(ctp), ncct_affine, "sec", step if uniform else None, np.int16),
          deriv / "ses-01" / f"{s}_ses-01_space-ncct_ctp.nii.gz")
    for name in ("cbf", "cbv", "mtt", "tmax"):
        _save(_nifti(to_ncct(reference[name]), ncct_affine),
              deriv / "ses-01" / "perfusion-maps" / f"{s}_ses-01_space-ncct_{name}.nii.gz")
    _save(_nifti(to_ncct(phantom.labels == PhantomLabel.CORE), ncct_affine, dtype=np.uint8),
          deriv / "ses-02" / f"{s}_ses-02_space-ncct_lesion-msk.nii.gz")
    return subject
