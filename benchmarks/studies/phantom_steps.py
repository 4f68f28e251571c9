"""What each preprocessing choice does to CBF on the digital phantom (docs/validation.md).

Prints four tables, all with the phantom's true AIF (so the automatic AIF selection plays no part):

1. median grey-matter CBF / truth for sSVD, cSVD and oSVD, and grey-matter CBV / truth, with and without
   noise and the guided filter (radius 2 and 1 voxels);
2. the CBF contrast across the ischemic core's edge (median CBF of the one-voxel shell outside the core minus
   that of the one-voxel shell inside it, sSVD) with and without the guided filter, against the truth's;
3. how sharp the core's edge stays: the 10-90% width in mm of the CBF step across it (median sSVD CBF in
   bins of signed in-plane distance to the core's border, one voxel wide, within the lesion), from the
   noise-free phantom so that only the blur counts, for the guided filter and for a box mean of the same
   radius;
4. what the filter does to the lesion a user measures at the phantom's 8 HU of noise: ischemic core (relative
   CBF < 30%) and hypoperfused tissue (Tmax > 6 s), volume and Dice with the truth
   (``ctp_nipype.perfusion.stats.lesion_measures``, CSF and vessels excluded), sSVD and oSVD, without a filter,
   with the guided filter (r = 1) and with a box mean of the same radius;
5. why oSVD loses grey-matter CBF to noise: grey matter's CBF / truth for oSVD and sSVD at 0-8 HU of noise (no
   filter), with the median relative threshold oSVD's ladder chose and the median oscillation index (OI) of its
   answer, and the OI of the noise-free curves' deconvolution at thresholds along the ladder (the floor that
   noise adds to).

    python benchmarks/studies/phantom_steps.py [--sizes small demo] [--seed 4] [--tables 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy import ndimage

from ctp_nipype.perfusion import stats
from ctp_nipype.perfusion.filtering import guided_filter
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel, oscillation_index
from ctp_nipype.validation import grey_matter_svd

METHODS = ("ssvd", "csvd", "osvd")
OI_FLOOR_THRESHOLDS = (0.002, 0.02, 0.063, 0.1, 0.26)


def fits(ph, hu):
    curves = prepare_curves(hu, ph.frame_times, ph.aif)
    return {m: SVDModel(curves.aif, curves.frame_times, method=m).fit(curves.tissue, ph.brain_mask) for m in METHODS}


def edge_shells(ph):
    core = ph.labels == PhantomLabel.CORE
    structure = np.ones((3, 3, 1), bool)
    inside = core & ~ndimage.binary_erosion(core, structure)
    outside = ndimage.binary_dilation(core, structure) & ~core & ph.brain_mask & (ph.cbf > 0)
    return inside, outside


def signed_distance_mm(region, voxel_mm):
    """In-plane distance to the region's border per slice, in mm: negative inside, positive outside."""
    slices = [
        ndimage.distance_transform_edt(~region[..., z], sampling=voxel_mm[:2])
        - ndimage.distance_transform_edt(region[..., z], sampling=voxel_mm[:2])
        for z in range(region.shape[2])
    ]
    return np.stack(slices, axis=-1)


def edge_width_mm(cbf, distance, within, step_mm, reach=6):
    """10-90% width (mm) of the median-CBF profile across a border, from its first crossings inside-out."""
    edges = (np.arange(-reach, reach + 1) - 0.5) * step_mm
    centres, medians = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        selected = within & (distance > low) & (distance <= high)
        if selected.sum() > 5:
            centres.append(0.5 * (low + high))
            medians.append(np.median(cbf[selected]))
    centres, medians = np.array(centres), np.array(medians)

    def crossing(fraction):
        level = medians[0] + fraction * (medians[-1] - medians[0])
        for i in range(len(medians) - 1):
            a, b = medians[i] - level, medians[i + 1] - level
            if a * b <= 0 and medians[i] != medians[i + 1]:
                return centres[i] + (level - medians[i]) / (medians[i + 1] - medians[i]) * (centres[i + 1] - centres[i])
        return np.nan

    return crossing(0.9) - crossing(0.1)


def edge_table(sizes, seed):
    print("\n| phantom | CBF map (sSVD, noise-free input) | 10-90% width of the core's edge (mm) |")
    print("|---|---|---:|")
    for size in sizes:
        ph = make_phantom(size, seed=seed, noise_sd_hu=0.0)
        core = ph.labels == PhantomLabel.CORE
        lesion = core | (ph.labels == PhantomLabel.PENUMBRA)
        distance = signed_distance_mm(core, np.asarray(ph.voxel_size_mm, float))
        step = float(ph.voxel_size_mm[0])
        rows = [("truth", ph.cbf), ("no filter", fits(ph, ph.hu)["ssvd"].cbf)]
        for radius in (1, 2):
            rows.append((f"guided filter, r = {radius}", fits(ph, guided_filter(ph.hu, radius=radius))["ssvd"].cbf))
            box = ndimage.uniform_filter(ph.hu, size=(2 * radius + 1, 2 * radius + 1, 1, 1))
            rows.append((f"box mean, r = {radius}", fits(ph, box)["ssvd"].cbf))
        for label, cbf in rows:
            print(f"| {size} | {label} | {edge_width_mm(cbf, distance, lesion, step):.1f} |", flush=True)


def lesion_table(sizes, seed):
    print("\n| phantom (8 HU) | filter | method | core ml (truth) | core Dice | hypoperfused ml (truth) | hypoperfused Dice |")
    print("|---|---|---|---:|---:|---:|---:|")
    for size in sizes:
        ph = make_phantom(size, seed=seed)
        voxel_ml = float(np.prod(ph.voxel_size_mm)) / 1000.0
        core = ph.labels == PhantomLabel.CORE
        hypoperfused = core | (ph.labels == PhantomLabel.PENUMBRA)
        csf = ph.labels == PhantomLabel.CSF
        vessels = (ph.labels == PhantomLabel.ARTERY) | (ph.labels == PhantomLabel.VEIN)
        filters = {
            "none": ph.hu,
            "guided, r = 1": guided_filter(ph.hu, radius=1),
            "box mean, r = 1": ndimage.uniform_filter(ph.hu, size=(3, 3, 1, 1)),
        }
        for label, hu in filters.items():
            result = fits(ph, hu)
            for method in ("ssvd", "osvd"):
                found = stats.lesion_measures(result[method].cbf, result[method].tmax, ph.brain_mask, ph.affine,
                                              voxel_ml, csf=csf, vessels=vessels)
                print(f"| {size} | {label} | {method} | {found.core_volume_ml:.1f} ({core.sum() * voxel_ml:.1f}) | "
                      f"{stats.dice(found.core, core):.2f} | {found.hypoperfused_volume_ml:.1f} "
                      f"({hypoperfused.sum() * voxel_ml:.1f}) | {stats.dice(found.hypoperfused, hypoperfused):.2f} |",
                      flush=True)


def grey_matter_table(sizes, seed):
    print("| phantom | noise | guided filter | sSVD | cSVD | oSVD | CBV | core-edge CBF contrast (sSVD / truth) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for size in sizes:
        for noise in (0.0, 8.0):
            ph = make_phantom(size, seed=seed, noise_sd_hu=noise)
            grey = ph.labels == PhantomLabel.GREY_MATTER
            inside, outside = edge_shells(ph)
            true_contrast = np.median(ph.cbf[outside]) - np.median(ph.cbf[inside])
            for label, radius in (("no", None), ("r = 2", 2), ("r = 1", 1)):
                hu = ph.hu if radius is None else guided_filter(ph.hu, radius=radius)
                result = fits(ph, hu)
                ratios = [np.median(result[m].cbf[grey]) / np.median(ph.cbf[grey]) for m in METHODS]
                cbv = np.median(result["ssvd"].cbv[grey]) / np.median(ph.cbv[grey])
                cbf = result["ssvd"].cbf
                contrast = np.median(cbf[outside]) - np.median(cbf[inside])
                print(f"| {size} | {noise:g} HU | {label} | " + " | ".join(f"{r:.2f}" for r in ratios)
                      + f" | {cbv:.2f} | {contrast:.1f} / {true_contrast:.1f} |", flush=True)


def osvd_noise_table(sizes, seed):
    print("\n| phantom | noise | oSVD CBF / truth | sSVD CBF / truth | oSVD threshold (median) | oSVD OI (median) |")
    print("|---|---|---:|---:|---:|---:|")
    for size in sizes:
        for noise in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
            cell, model, tissue = grey_matter_svd(size, seed, noise)
            print(f"| {size} | {noise:g} HU | {cell['osvd']:.2f} | {cell['ssvd']:.2f} | "
                  f"{cell['threshold']:.3f} | {cell['oi']:.3f} |", flush=True)
            if noise == 0.0:  # the noise-free floor of the OI along the ladder, and the residue's first samples
                floor = {t: np.median(oscillation_index(model.deconvolve(tissue, t))) for t in OI_FLOOR_THRESHOLDS}
                residue = model.deconvolve(tissue, model.thresholds[0])
                start = np.median(residue[:, :4] / residue.max(axis=-1, keepdims=True), axis=0)
        print(f"\n{size}, noise free: median OI of the deconvolution at threshold "
              + ", ".join(f"{t:g}: {v:.4f}" for t, v in floor.items())
              + f"; median residue / max over the first four samples at {model.thresholds[0]:g}: "
              + ", ".join(f"{v:.2f}" for v in start), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "demo"])
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--tables", nargs="+", type=int, choices=(1, 2, 3, 4, 5), default=[1, 2, 3, 4, 5],
                        help="tables to print (1 and 2 share their runs and come together)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    if {1, 2} & set(args.tables):
        grey_matter_table(args.sizes, args.seed)
    if 3 in args.tables:
        edge_table(args.sizes, args.seed)
    if 4 in args.tables:
        lesion_table(args.sizes, args.seed)
    if 5 in args.tables:
        osvd_noise_table(args.sizes, args.seed)


if __name__ == "__main__":
    main()
