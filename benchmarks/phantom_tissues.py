"""The network on the small phantom per tissue: CBF / truth, and the lesion it finds, for any weights.

    python benchmarks/phantom_tissues.py [--weights shipped RUN/best.safetensors ...] [--seed 0]

The phantom of ``tests/test_lesion.py::test_transformer_lesion_volumes_and_dice_on_the_phantom``: the small
phantom (4 x 4 x 5 mm voxels), 1 HU of noise, core and penumbra delayed 8 s (so that the BAD > 6 s criterion
is unambiguous), the true AIF, no guided filter. For each weights file it prints the median CBF over the
median true CBF in grey matter, white matter, penumbra and core, then the core (relative CBF < 30% of the
unaffected hemisphere's mean) and hypoperfused (BAD > 6 s) volumes and Dice against the phantom's labels,
with ``ctp_nipype.perfusion.stats.lesion_measures``. The white matter matters to the core: its CBF enters the
unaffected hemisphere's reference, so a network that overestimates it calls more of the penumbra core.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from ctp_nipype.nn.inference import estimate_curves
from ctp_nipype.nn.weights import SHIPPED_WEIGHTS, load_model
from ctp_nipype.perfusion import stats
from ctp_nipype.perfusion.phantom import DEFAULT_TISSUE, PhantomLabel, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves

TISSUES = (PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER, PhantomLabel.PENUMBRA, PhantomLabel.CORE)
LESION_DELAY_S = 8.0
NOISE_SD_HU = 1.0


def lesion_phantom(seed=0):
    """The small phantom with its lesion delayed :data:`LESION_DELAY_S` and :data:`NOISE_SD_HU` of noise."""
    tissue = {label: replace(DEFAULT_TISSUE[label], delay_s=LESION_DELAY_S)
              for label in (PhantomLabel.CORE, PhantomLabel.PENUMBRA)}
    return make_phantom("small", seed=seed, noise_sd_hu=NOISE_SD_HU, tissue=tissue)


def network_on_phantom(phantom, model):
    """``(ratios, lesion)``: ``{label name: median CBF / median truth}`` and the :class:`LesionMeasures`."""
    curves = prepare_curves(phantom.hu, phantom.frame_times, phantom.aif)
    brain = phantom.brain_mask
    maps = estimate_curves(curves.aif, curves.tissue[brain], curves.frame_times, model=model)
    cbf = np.zeros(brain.shape, np.float32)
    bad = np.zeros(brain.shape, np.float32)
    cbf[brain], bad[brain] = maps["cbf"], maps["bad"]
    ratios = {}
    for label in TISSUES:
        inside = (phantom.labels == label) & brain
        ratios[label.name.lower()] = float(np.median(cbf[inside]) / np.median(phantom.cbf[inside]))
    csf = phantom.labels == PhantomLabel.CSF
    vessels = np.isin(phantom.labels, [PhantomLabel.ARTERY, PhantomLabel.VEIN])
    voxel_ml = float(abs(np.linalg.det(phantom.affine[:3, :3]))) / 1000.0
    lesion = stats.lesion_measures(cbf, bad, brain, phantom.affine, voxel_ml, csf=csf, vessels=vessels,
                                   delay_name="bad")
    return ratios, lesion


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["shipped"],
                        help="weights files ('shipped' for the package's)")
    parser.add_argument("--seed", type=int, default=0, help="the phantom's seed (the test's: 0)")
    args = parser.parse_args(argv)
    phantom = lesion_phantom(args.seed)
    voxel_ml = float(abs(np.linalg.det(phantom.affine[:3, :3]))) / 1000.0
    core_true = phantom.labels == PhantomLabel.CORE
    hypo_true = core_true | (phantom.labels == PhantomLabel.PENUMBRA)
    names = " | ".join(f"{label.name.lower().replace('_', ' ')} CBF / truth" for label in TISSUES)
    print(f"truth: core {core_true.sum() * voxel_ml:.2f} ml, hypoperfused {hypo_true.sum() * voxel_ml:.2f} ml")
    print(f"weights | {names} | core ml | core Dice | hypoperfused ml | hypoperfused Dice | seconds")
    for weights in args.weights:
        start = time.perf_counter()
        model = load_model(SHIPPED_WEIGHTS if weights == "shipped" else weights)
        ratios, lesion = network_on_phantom(phantom, model)
        cells = " | ".join(f"{ratios[label.name.lower()]:.2f}" for label in TISSUES)
        print(f"{weights} | {cells} | {lesion.core_volume_ml:.2f} | {stats.dice(lesion.core, core_true):.2f} | "
              f"{lesion.hypoperfused_volume_ml:.2f} | {stats.dice(lesion.hypoperfused, hypo_true):.2f} | "
              f"{time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
