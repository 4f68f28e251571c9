"""The network on the small phantom per tissue: CBF / truth, and the lesion it finds, for any weights.

    python benchmarks/studies/phantom_tissues.py [--weights shipped RUN/best.safetensors ...] [--seed 0]

The phantom and the lesion measure of
``tests/test_lesion.py::test_transformer_lesion_volumes_and_dice_on_the_phantom`` (imported from there, so that
the benchmark and the test measure the same thing): the small phantom, 1 HU of noise, core and penumbra
delayed 8 s, the true AIF, no guided filter. For each weights file it prints the median CBF over the median
true CBF in grey matter, white matter, penumbra and core, then the core (relative CBF < 30% of the unaffected
hemisphere's mean) and hypoperfused (BAD > 6 s) volumes and Dice against the phantom's labels (the test allows
20% on the volumes and asks Dice >= 0.7). The white matter matters to the core: its CBF enters the unaffected
hemisphere's reference, so a network that overestimates it calls more of the penumbra core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ctp_nipype import validation
from ctp_nipype.nn.weights import SHIPPED_WEIGHTS, load_model
from ctp_nipype.perfusion import stats
from ctp_nipype.sims.phantom import PhantomLabel

TISSUES = (PhantomLabel.GREY_MATTER, PhantomLabel.WHITE_MATTER, PhantomLabel.PENUMBRA, PhantomLabel.CORE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["shipped"],
                        help="weights files ('shipped' for the package's)")
    parser.add_argument("--seed", type=int, default=0, help="the phantom's seed (the test's: 0)")
    args = parser.parse_args(argv)
    phantom = validation.network_lesion_phantom(args.seed)
    core_true, hypo_true = validation.lesion_truth(phantom)
    voxel_ml = validation.voxel_volume_ml(phantom)
    tissue_masks = {label: (phantom.labels == label) & phantom.brain_mask for label in TISSUES}
    names = " | ".join(f"{label.name.lower().replace('_', ' ')} CBF / truth" for label in TISSUES)
    print(f"truth: core {core_true.sum() * voxel_ml:.2f} ml, "
          f"hypoperfused {hypo_true.sum() * voxel_ml:.2f} ml")
    print(f"weights | {names} | core ml | core Dice | hypoperfused ml | hypoperfused Dice | seconds")
    for weights in args.weights:
        start = time.perf_counter()
        model = load_model(SHIPPED_WEIGHTS if weights == "shipped" else weights)
        cbf, lesion = validation.network_lesion(phantom, model)
        cells = " | ".join(f"{np.median(cbf[inside]) / np.median(phantom.cbf[inside]):.2f}"
                           for inside in tissue_masks.values())
        print(f"{weights} | {cells} | {lesion.core_volume_ml:.2f} | {stats.dice(lesion.core, core_true):.2f} | "
              f"{lesion.hypoperfused_volume_ml:.2f} | {stats.dice(lesion.hypoperfused, hypo_true):.2f} | "
              f"{time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
