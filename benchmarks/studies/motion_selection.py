"""Automatic AIF/VOF selection after motion correction, with and without censoring the displaced frames.

On the digital phantom with injected head motion (``make_phantom(..., motion=True)``: up to 2 mm and
2 degrees over five frames after the first pass), every frame is registered to the pre-bolus mean
(``motion.register_series``), then the AIF and VOF are chosen automatically
(``aif.select_vascular_functions``) on the corrected series, once with every frame and once with the frames
that ``motion.censor_frames`` flags (displaced from the reference by more than 0.5 mm) left out. Prints per
seed the moved and the censored frames, the injected displacement of the moved frames (min-max, mm, from the
truth's parameters), the registration's largest displacement on unmoved frames, the skull check of ``LoadCTP``
(largest ``motion.bone_surface_displacement``, mm) on the still and the moving series, the
share of the AIF's voxels in the artery label and of the VOF's in the vein label (``-``: no VOF found), and
grey matter's median sSVD CBF over the truth with the selection's partial-volume corrected AIF (no filter).
``--motion-start F`` moves the phantom's motion to start at frame F (for example 9: during the arterial
first pass, where the censored frames of the AIF are repaired with a gamma-variate fit).

    python benchmarks/studies/motion_selection.py [--size small] [--seeds 0 1 2 3 4 5 6 7] [--motion-start F]

About 5 s per seed on the small phantom and 40 s on the demo one (2 cores).
"""

from __future__ import annotations

import argparse

import numpy as np

from ctp_nipype.perfusion import masks
from ctp_nipype.perfusion.aif import SelectionError, select_vascular_functions
from ctp_nipype.perfusion.motion import (
    bone_surface_displacement,
    censor_frames,
    displacement_from_reference,
    register_series,
)
from ctp_nipype.sims.phantom import PhantomLabel, apply_motion, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel


def label_shares(ph, series, censored):
    """Shares of the AIF's voxels in the artery and of the VOF's in the vein (None: no VOF), and grey
    matter's sSVD CBF / truth with the chosen AIF."""
    brain = masks.brain_mask(masks.time_average(series, censored))
    try:
        found = select_vascular_functions(series, ph.frame_times, brain, require_vof=False, censored_frames=censored)
    except SelectionError as err:
        return f"failed: {err}", None, None
    aif = np.mean([ph.labels[tuple(v)] == PhantomLabel.ARTERY for v in found.aif_voxels])
    vof = None if found.vof_voxels is None else np.mean([ph.labels[tuple(v)] == PhantomLabel.VEIN
                                                          for v in found.vof_voxels])
    grey = ph.labels == PhantomLabel.GREY_MATTER
    curves = prepare_curves(series[grey], ph.frame_times, found.aif_corrected)
    cbf = SVDModel(curves.aif, curves.frame_times, method="ssvd").fit(curves.tissue).cbf
    return aif, vof, float(np.median(cbf) / np.median(ph.cbf[grey]))


def moved_phantom(size, seed, motion_start):
    """The phantom with motion, or the still one moved by the same motion starting at ``motion_start``."""
    ph = make_phantom(size, seed=seed, motion=True)
    if motion_start is None:
        return ph, ph.hu, np.any(ph.motion_parameters != 0, axis=1)
    still = make_phantom(size, seed=seed)
    excursion = ph.motion_parameters[np.any(ph.motion_parameters != 0, axis=1)]
    parameters = np.zeros_like(ph.motion_parameters)
    parameters[motion_start : motion_start + len(excursion)] = excursion
    hu = apply_motion(still.hu.copy(), parameters, still.voxel_size_mm)
    return still, hu, np.any(parameters != 0, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "demo"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    parser.add_argument("--motion-start", type=int, help="first moved frame (default: the phantom's own)")
    args = parser.parse_args(argv)
    print(f"{args.size} phantom with motion; AIF in artery / VOF in vein (share of the 5 voxels) / grey-matter "
          "sSVD CBF over the truth\n")
    print("| seed | moved frames | censored frames | injected displacement (mm) | largest displacement of an "
          "unmoved frame (mm) | skull surface, still / moving (mm) | all frames: AIF / VOF / CBF | "
          "censored: AIF / VOF / CBF |")
    print("|---:|---|---|---|---:|---|---|---|")
    fmt = lambda share: "-" if share is None else (share if isinstance(share, str) else f"{share:.2f}")  # noqa: E731
    for seed in args.seeds:
        ph, hu, moved = moved_phantom(args.size, seed, args.motion_start)
        injected = displacement_from_reference(make_phantom(args.size, seed=seed, motion=True).motion_parameters)
        injected = injected[injected > 0]
        still_hu = make_phantom(args.size, seed=seed).hu
        skull = [bone_surface_displacement(h, ph.voxel_size_mm).max() for h in (still_hu, hu)]
        corrected = register_series(hu, ph.voxel_size_mm, min(7, int(np.argmax(moved)) or 7))
        censored = censor_frames(corrected.parameters)
        still = displacement_from_reference(corrected.parameters)[~moved].max()
        plain = label_shares(ph, corrected.corrected, None)
        kept = label_shares(ph, corrected.corrected, censored)
        print(f"| {seed} | {np.flatnonzero(moved).tolist()} | {np.flatnonzero(censored).tolist()} | "
              f"{injected.min():.2f}-{injected.max():.2f} | {still:.2f} | {skull[0]:.3f} / {skull[1]:.2f} | "
              f"{' / '.join(fmt(v) for v in plain)} | {' / '.join(fmt(v) for v in kept)} |", flush=True)


if __name__ == "__main__":
    main()
