"""Helpers shared by several test files (no test imports another test file): analytic truth on a fine grid,
SVD maps of a phantom and the phantom's maps and masks written as NIfTI with the conventions' names."""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from ctp_nipype.bids import derivative_name
from ctp_nipype.io import write_nifti, write_perfusion_maps
from ctp_nipype.perfusion.constants import KAPPA_H, RHO, SVD_METHODS  # noqa: F401 (re-exported to tests)
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.sims.phantom import PhantomLabel
from ctp_nipype.validation import label_mask



def fine_grid_case(
    cbf=60.0,
    mtt=4.0,
    delay=0.0,
    alpha=1.0,
    dt=1.0,
    duration=90.0,
    kappa_h=KAPPA_H,
    rho=RHO,
    peak=400.0,
    fine=0.01,
):
    """Noise-free AIF and tissue curve from a continuous convolution on a fine grid.

    The AIF is a gamma variate (arrival 10 s, peak 4.5 s later); the residue
    ``r(t) = 1 - GammaCDF(t - delay; alpha, mtt / alpha)``, zero before ``delay``;
    the tissue ``C = Ca (x) (rho / kappa_H) CBF / 6000 r`` integrated at
    ``fine`` seconds, then sampled every ``dt``. Returns (aif, tissue, frame_times).
    """
    t_fine = np.arange(0.0, duration, fine)
    x = np.clip(t_fine - 10.0, 0.0, None)
    aif = peak * (x / 4.5) ** 3 * np.exp(-(x - 4.5) / 1.5)
    shifted = np.clip(t_fine - delay, 0.0, None)
    residue = 1.0 - gammainc(alpha, shifted / (mtt / alpha))
    residue[t_fine < delay] = 0.0
    flow_residue = (rho / kappa_h) * cbf / 6000.0 * residue
    tissue = np.convolve(aif, flow_residue)[: t_fine.size] * fine
    step = int(round(dt / fine))
    frame_times = t_fine[::step]
    return aif[::step], tissue[::step], frame_times


def svd_maps(phantom, methods=SVD_METHODS):
    """``{(method, map): array}`` of the SVD methods on the phantom's curves with its true AIF."""
    curves = prepare_curves(phantom.hu, phantom.frame_times, phantom.aif)
    maps = {}
    for method in methods:
        fit = SVDModel(curves.aif, curves.frame_times, method=method).fit(curves.tissue, phantom.brain_mask)
        maps.update({(method, name): getattr(fit, name) for name in ("cbf", "cbv", "mtt", "tmax")})
    return maps


def write_phantom_inputs(folder, phantom, maps, prefix="sub-01"):
    """Maps with the conventions' names and the phantom's masks as NIfTI; returns (map files, mask files)."""
    files = []
    for method in sorted({m for m, _ in maps}):
        written = write_perfusion_maps(
            folder, prefix, method, {name: v for (m, name), v in maps.items() if m == method}, phantom.affine
        )
        files += [str(p) for p in written.values()]
    masks = {
        "brain": phantom.brain_mask,
        "gm": label_mask(phantom, PhantomLabel.GREY_MATTER),
        "wm": label_mask(phantom, PhantomLabel.WHITE_MATTER),
        "csf": label_mask(phantom, PhantomLabel.CSF),
        "vessel": label_mask(phantom, PhantomLabel.ARTERY, PhantomLabel.VEIN),
        "lesion": label_mask(phantom, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
    }
    mask_files = {}
    for name, mask in masks.items():
        path = folder / derivative_name(prefix, "mask", desc=name)
        write_nifti(path, mask.astype(np.uint8), phantom.affine, dtype=np.uint8)
        mask_files[name] = str(path)
    return files, mask_files


def nifti_proxy(folder, series, name="series.nii"):
    """nibabel's lazy proxy of ``series`` saved as an uncompressed float32 NIfTI (the layout of the pipeline's
    series: x fastest, time slowest), as ``load_ctp(..., lazy=True)`` gives it to the science."""
    import nibabel as nb

    path = folder / name
    nb.save(nb.Nifti1Image(np.asarray(series, np.float32), np.eye(4)), str(path))
    return nb.load(str(path), mmap=False).dataobj
