"""Automatic AIF/VOF selection after motion correction, with and without censoring the displaced frames.

On the digital phantom with injected head motion (``make_phantom(..., motion=True)``: up to 2 mm and
2 degrees over five frames after the first pass), every frame is registered to the pre-bolus mean
(``motion.register_series``), then the AIF and VOF are chosen automatically
(``aif.select_vascular_functions``) on the corrected series, once with every frame and once with the frames
that ``motion.censor_frames`` flags (displaced from the reference by more than 0.5 mm) left out. Prints per
seed the moved and the censored frames, the registration's largest displacement on unmoved frames, and the
share of the AIF's voxels in the artery label and of the VOF's in the vein label (``-``: no VOF found).

    python benchmarks/motion_selection.py [--size small] [--seeds 0 1 2 3 4 5 6 7]

About 5 s per seed on the small phantom and 40 s on the demo one (2 cores).
"""

from __future__ import annotations

import argparse

import numpy as np

from ctp_nipype.perfusion import masks
from ctp_nipype.perfusion.aif import SelectionError, select_vascular_functions
from ctp_nipype.perfusion.motion import censor_frames, displacement_from_reference, register_series
from ctp_nipype.perfusion.phantom import PhantomLabel, make_phantom


def label_shares(ph, series, censored):
    """Shares of the AIF's voxels in the artery and of the VOF's in the vein (None: no VOF)."""
    brain = masks.brain_mask(masks.time_average(series, censored))
    try:
        found = select_vascular_functions(series, ph.frame_times, brain, require_vof=False, censored_frames=censored)
    except SelectionError as err:
        return f"failed: {err}", None
    aif = np.mean([ph.labels[tuple(v)] == PhantomLabel.ARTERY for v in found.aif_voxels])
    vof = None if found.vof_voxels is None else np.mean([ph.labels[tuple(v)] == PhantomLabel.VEIN
                                                          for v in found.vof_voxels])
    return aif, vof


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("small", "demo"))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    args = parser.parse_args(argv)
    print(f"{args.size} phantom with motion; AIF in artery / VOF in vein (share of the 5 voxels)\n")
    print("| seed | moved frames | censored frames | largest displacement of an unmoved frame (mm) "
          "| all frames: AIF / VOF | censored: AIF / VOF |")
    print("|---:|---|---|---:|---|---|")
    fmt = lambda share: "-" if share is None else (share if isinstance(share, str) else f"{share:.1f}")  # noqa: E731
    for seed in args.seeds:
        ph = make_phantom(args.size, seed=seed, motion=True)
        moved = np.any(ph.motion_parameters != 0, axis=1)
        corrected = register_series(ph.hu, ph.voxel_size_mm, 7)
        censored = censor_frames(corrected.parameters)
        still = displacement_from_reference(corrected.parameters)[~moved].max()
        plain = label_shares(ph, corrected.corrected, None)
        kept = label_shares(ph, corrected.corrected, censored)
        print(f"| {seed} | {np.flatnonzero(moved).tolist()} | {np.flatnonzero(censored).tolist()} | {still:.2f} | "
              f"{fmt(plain[0])} / {fmt(plain[1])} | {fmt(kept[0])} / {fmt(kept[1])} |", flush=True)


if __name__ == "__main__":
    main()
