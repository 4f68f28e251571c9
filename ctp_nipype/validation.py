"""Measures of the estimates against the digital phantom's truth, shared by the tests and the studies.

A test asserts a measure and a study (``benchmarks/studies/``) prints the same measure over noise, seeds or
weights; both call it from here, so that the two measure the same thing:

* :func:`label_mask`, :func:`lesion_truth`, :func:`exclusions`: truth masks of a :class:`~ctp_nipype.sims.phantom.Phantom`;
* :func:`grey_matter_svd`: sSVD and oSVD of the phantom's grey matter with its true AIF;
* :func:`true_tmax`: the true Tmax of simulated curves;
* :func:`network_lesion_phantom`, :func:`network_lesion`: the network's lesion on a phantom with a delayed lesion;
* :func:`truth_labels`, :func:`grey_matter_ratios`: grey-matter CBF of a BIDS App run against a phantom
  dataset's truth (``ctp-phantom``'s ``derivatives/phantom-truth``); :func:`pipeline_grey_matter_ratios` makes
  the phantom, runs the BIDS App and measures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .bids import derivative_name
from .perfusion import stats
from .perfusion.prepare import prepare_curves
from .perfusion.svd import SVDModel
from .sims.phantom import DEFAULT_TISSUE, PhantomLabel, make_phantom
from .sims.simulate import disperse, residue_function

#: the folder of a phantom dataset's truth, below its root
TRUTH_DIR = Path("derivatives") / "phantom-truth"


def label_mask(phantom, *labels):
    """Voxels of the phantom with any of ``labels``."""
    return np.isin(phantom.labels, [int(label) for label in labels])


def lesion_truth(phantom):
    """``(core, hypoperfused)``: the true core and the true hypoperfused tissue (core and penumbra)."""
    core = label_mask(phantom, PhantomLabel.CORE)
    return core, core | label_mask(phantom, PhantomLabel.PENUMBRA)


def exclusions(phantom):
    """``(csf, vessels)``: the masks left out of the lesion measures."""
    return label_mask(phantom, PhantomLabel.CSF), label_mask(phantom, PhantomLabel.ARTERY, PhantomLabel.VEIN)


def voxel_volume_ml(phantom):
    """One voxel's volume in ml."""
    return float(np.prod(phantom.voxel_size_mm)) / 1000.0


def grey_matter_svd(size, seed, noise):
    """sSVD and oSVD of the phantom's grey matter with its true AIF and no filter.

    Returns ``(cell, model, tissue)``: ``cell`` holds the median CBF / median truth of ``'osvd'`` and
    ``'ssvd'`` and oSVD's median ``'threshold'`` and ``'oi'``; ``model`` is the oSVD model, ``tissue`` the curves.
    """
    ph = make_phantom(size, seed=seed, noise_sd_hu=noise)
    grey = ph.labels == PhantomLabel.GREY_MATTER
    curves = prepare_curves(ph.hu[grey], ph.frame_times, ph.aif)
    truth = np.median(ph.cbf[grey])
    model = SVDModel(curves.aif, curves.frame_times, method="osvd")
    osvd = model.fit(curves.tissue)
    ssvd = SVDModel(curves.aif, curves.frame_times, method="ssvd").fit(curves.tissue)
    cell = {"osvd": np.median(osvd.cbf) / truth, "ssvd": np.median(ssvd.cbf) / truth,
            "threshold": np.median(osvd.threshold), "oi": np.median(osvd.oscillation_index)}
    return {key: float(value) for key, value in cell.items()}, model, curves.tissue


#: the fine grid (s) on which the true Tmax of a simulated curve is found
TMAX_FINE_DT = 0.01


def true_tmax(delay, t_a, mtt, alpha, horizon_s=60.0, chunk=256):
    """The true Tmax (s) of simulated curves: delay + time of the maximum of (dispersion kernel (x) residue), on a
    fine grid, per curve (``ctp_nipype.sims.simulate``'s residue and dispersion).

    Shared by ``benchmarks/studies/tmax_peak.py`` and ``benchmarks/studies/triage_delay.py``.
    """
    delay, t_a, mtt, alpha = (np.broadcast_to(np.asarray(v, float), np.shape(delay)).ravel()
                              for v in (delay, t_a, mtt, alpha))
    t = np.arange(0.0, horizon_s, TMAX_FINE_DT)
    out = np.empty(delay.size)
    for start in range(0, delay.size, chunk):
        rows = slice(start, start + chunk)
        residue = np.atleast_2d(residue_function(t, mtt[rows], alpha[rows]))
        effective = disperse(residue, TMAX_FINE_DT, t_a[rows])
        out[rows] = delay[rows] + np.argmax(effective, axis=1) * TMAX_FINE_DT
    return out


#: The network's lesion phantom: core and penumbra delayed 8 s. The network's BAD is the arrival delay alone (Tmax
#: adds the dispersion), so the default lesion, delayed by exactly the 6 s threshold, sits on it: BAD scatters
#: around 6.0 s and half the lesion falls on each side; delayed 8 s it is unambiguously hypoperfused by BAD > 6 s.
NETWORK_LESION_DELAY_S = 8.0


def network_lesion_phantom(seed=0):
    """The small phantom, 1 HU of noise, its lesion delayed :data:`NETWORK_LESION_DELAY_S`."""
    tissue = {label: replace(DEFAULT_TISSUE[label], delay_s=NETWORK_LESION_DELAY_S)
              for label in (PhantomLabel.CORE, PhantomLabel.PENUMBRA)}
    return make_phantom("small", seed=seed, noise_sd_hu=1.0, tissue=tissue)


def network_lesion(phantom, model=None):
    """``(cbf, result)``: the network's CBF map (true AIF, no filter) and its :class:`stats.LesionMeasures`.

    ``model`` None runs the shipped weights.
    """
    from .nn.inference import estimate_curves

    curves = prepare_curves(phantom.hu, phantom.frame_times, phantom.aif)
    brain = phantom.brain_mask
    out = estimate_curves(curves.aif, curves.tissue[brain], curves.frame_times, model=model, device="cpu")
    cbf, bad = np.zeros(brain.shape, np.float32), np.zeros(brain.shape, np.float32)
    cbf[brain], bad[brain] = out["cbf"], out["bad"]
    csf, vessels = exclusions(phantom)
    result = stats.lesion_measures(cbf, bad, brain, phantom.affine, voxel_volume_ml(phantom), csf=csf,
                                   vessels=vessels, delay_name="bad")
    return cbf, result


def _truth_map(bids, name, subject, session):
    import nibabel as nb

    prefix = f"sub-{subject}_ses-{session}"
    folder = Path(bids) / TRUTH_DIR / f"sub-{subject}" / f"ses-{session}" / "perf"
    return np.asarray(nb.load(folder / derivative_name(prefix, name, desc="truth")).dataobj)


def truth_labels(bids, subject="01", session="01"):
    """The phantom's label map of one scan of a phantom dataset (grey matter 1, artery 4, vein 5, ...)."""
    return _truth_map(bids, "dseg", subject, session)


def grey_matter_ratios(bids, perf, methods, subject="01", session="01"):
    """Median grey-matter CBF over the median truth, per method, of one scan's maps in the folder ``perf``."""
    import nibabel as nb

    grey = truth_labels(bids, subject, session) == PhantomLabel.GREY_MATTER
    true_cbf = np.median(_truth_map(bids, "cbf", subject, session)[grey])
    prefix = f"sub-{subject}_ses-{session}"
    return {method: float(np.median(np.asarray(nb.load(Path(perf) / derivative_name(prefix, "cbf", desc=method))
                                               .dataobj)[grey]) / true_cbf) for method in methods}


def pipeline_grey_matter_ratios(root, noise_hu, seed, methods, size="small", weights=None):
    """Median grey-matter CBF / truth per method, one BIDS App run on a fresh phantom under ``root``.

    The measure of ``benchmarks/studies/pipeline_noise.py`` (and ``network_targets.py``): the phantom dataset
    is written with :func:`ctp_nipype.sims.dataset.write_phantom_dataset`, the BIDS App runs quietly with
    ``--nprocs 1 --device cpu``, and :func:`grey_matter_ratios` reads its maps.
    """
    import contextlib
    import io

    from .cli import bids_app
    from .sims.dataset import write_phantom_dataset

    root = Path(root)
    bids, out = root / "bids", root / "out"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        write_phantom_dataset(bids, subjects=1, size=size, seed=seed, noise_sd_hu=noise_hu)
        argv = [str(bids), str(out), "participant", "--methods", *methods, "-w", str(root / "work"),
                "--nprocs", "1", "--device", "cpu"] + ([] if weights is None else ["--weights", str(weights)])
        if bids_app.main(argv) != 0:
            raise RuntimeError(f"ctp-bids-app failed at {noise_hu} HU: {' '.join(argv)}")
    return grey_matter_ratios(bids, out / "sub-01" / "ses-01" / "perf", methods)
