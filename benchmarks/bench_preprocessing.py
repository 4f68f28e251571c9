"""Timing of the preprocessing steps on a 256 x 256 x 16 x 60 scan (issue 5 targets: <= 5 s each).

Prints one line per step. The scan is a synthetic head: skull, brain, CSF,
one artery and one vein (enough for the steps to do their real work), with
8 HU noise. Motion correction is timed on a few frames and reported per frame.

Run: .venv/bin/python benchmarks/bench_preprocessing.py
"""

from __future__ import annotations

import time

import numpy as np

from ctp_nipype.perfusion.aif import estimate_baseline_frames, select_vascular_functions
from ctp_nipype.perfusion.filtering import guided_filter
from ctp_nipype.perfusion.masks import brain_mask, csf_mask, time_average, vessel_mask
from ctp_nipype.perfusion.motion import register_series
from ctp_nipype.sims.simulate import gamma_variate_aif

SHAPE = (256, 256, 16)
N_FRAMES = 60
VOXEL_MM = (0.9, 0.9, 5.0)


def synthetic_head(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(N_FRAMES, dtype=float)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    r = np.sqrt(x**2 + (y / 0.85) ** 2 + (z / 1.6) ** 2)
    baseline = np.full(SHAPE, -1000.0, np.float32)
    baseline[r < 0.95] = 1000.0
    baseline[r < 0.88] = 35.0
    ventricle = (np.abs(x) < 0.15) & (np.abs(y) < 0.3) & (r < 0.88)
    baseline[ventricle] = 8.0
    aif = gamma_variate_aif(t, 5.0, 3.0, 1.5, 350.0)
    vof = gamma_variate_aif(t, 11.0, 3.0, 2.5, 350.0 * 1.5 / 2.5)
    tissue = 0.06 * gamma_variate_aif(t, 6.0, 3.0, 3.0, 350.0 * 1.5 / 3.0)
    curves = np.zeros(SHAPE + (N_FRAMES,), np.float32)
    brain = (r < 0.88) & ~ventricle
    curves[brain] = tissue
    artery = (np.hypot(x - 0.3, y) < 0.02) & (r < 0.88)
    vein = (np.hypot(x, y + 0.6) < 0.03) & (r < 0.88)
    curves[artery] = 0.5 * aif
    curves[vein] = vof
    hu = baseline[..., None] + curves
    hu += rng.normal(0, 8.0, hu.shape).astype(np.float32)
    # in NIfTI's (Fortran) order, x fastest and t slowest, as nibabel loads a scan
    return np.asfortranarray(hu), t


def timed(label, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    return result, seconds


def main():
    hu, t = synthetic_head()
    print(f"scan {hu.shape} float32, {hu.nbytes / 1e6:.0f} MB")

    def masks_step():
        brain = brain_mask(time_average(hu))
        n_base = estimate_baseline_frames(hu, brain)
        csf = csf_mask(hu, t, brain, n_base)
        vessels = vessel_mask(hu, t, brain, n_base, exclude=csf)
        return brain, csf, vessels

    (brain, csf, vessels), seconds = timed("masks", masks_step)
    print(f"masks (brain + CSF + vessels): {seconds:.2f} s  (target <= 5 s); "
          f"{brain.sum()} brain, {csf.sum()} CSF, {vessels.sum()} vessel voxels")
    result, seconds = timed("aif", select_vascular_functions, hu, t, brain, exclude_mask=csf)
    print(f"AIF/VOF selection + partial-volume correction: {seconds:.2f} s  (target <= 5 s); scale {result.scale:.2f}")
    for first, where in ((30, "after the first pass"), (8, "on the arterial peak")):
        censored = np.zeros(hu.shape[-1], bool)
        censored[first : first + 5] = True  # five frames displaced by head motion, as MotionCorrection flags them
        result, seconds = timed("aif-censored", select_vascular_functions, hu, t, brain, exclude_mask=csf,
                                censored_frames=censored)
        print(f"the same with frames {first}-{first + 4} censored ({where}; the likely vessels whose first pass "
              f"they cut are ranked on gamma-variate repaired curves): {seconds:.2f} s; scale {result.scale:.2f}")
    _, seconds = timed("gf", guided_filter, hu)
    print(f"guided filter, 2D, r=2, all 60 frames: {seconds:.2f} s  (target <= 5 s)")
    _, seconds = timed("gf3", guided_filter, hu, mode="3d")
    print(f"guided filter, 3D, r=2, all 60 frames: {seconds:.2f} s")
    n_motion = 6
    _, seconds = timed("motion", register_series, hu[..., :n_motion], VOXEL_MM, 3)
    print(f"motion correction: {seconds / n_motion:.2f} s per frame ({n_motion} frames), "
          f"about {seconds / n_motion * N_FRAMES:.0f} s for 60 frames")


if __name__ == "__main__":
    main()
