"""``python -m ctp_nipype.cli.demo OUT_DIR``: the ``make demo`` job.

Makes the digital brain phantom dataset (size ``demo``, two subjects), runs
the BIDS App at participant and group level with every available method
(the network when its weights are shipped), and prints where the maps,
reports and group tables are, with the grey-matter CBF of each method next
to the phantom's truth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

from ..bids import derivative_name
from ..sims.dataset import write_phantom_dataset
from . import bids_app


def _methods():
    from ..nn.weights import shipped_weights_available
    from ..perfusion.constants import NETWORK_METHOD, SVD_METHODS

    methods = list(SVD_METHODS)
    if shipped_weights_available():
        methods.append(NETWORK_METHOD)
    else:
        print("note: no Transformer weights are shipped in this build; the demo runs the SVD methods only.")
    return methods


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "demo_output").resolve()
    bids_dir, derivatives, work = out / "bids", out / "derivatives", out / "work"
    start = time.time()
    if not (bids_dir / "dataset_description.json").exists():
        write_phantom_dataset(bids_dir, subjects=2, size="demo", seed=1, log=print)
    methods = _methods()
    common = ["--methods", *methods, "-w", str(work), "--device", "cpu"]
    code = bids_app.main([str(bids_dir), str(derivatives), "participant", "--nprocs", "2", *common])
    if code:
        return code
    code = bids_app.main([str(bids_dir), str(derivatives), "group", "--methods", *methods])
    if code:
        return code

    print("\nGrey-matter CBF, median (ml/100 g/min), against the phantom's truth:")
    for perf in sorted(derivatives.glob("sub-*/ses-*/perf")):
        prefix = "_".join(perf.parts[-3:-1])
        truth = bids_dir / "derivatives" / "phantom-truth" / perf.relative_to(derivatives)
        labels = np.asarray(nb.load(truth / derivative_name(prefix, "dseg", desc="truth")).dataobj)
        grey = labels == 1
        true_cbf = np.median(np.asarray(nb.load(truth / derivative_name(prefix, "cbf", desc="truth")).dataobj)[grey])
        values = []
        for method in methods:
            cbf = np.asarray(nb.load(perf / derivative_name(prefix, "cbf", desc=method)).dataobj)
            values.append(f"{method} {np.median(cbf[grey]):5.1f}")
        print(f"  {prefix}: truth {true_cbf:5.1f} | " + " | ".join(values))
    print(f"\nDemo finished in {time.time() - start:.0f} s.")
    print(f"  input dataset: {bids_dir}")
    print(f"  derivatives:   {derivatives} (maps under sub-*/ses-*/perf/)")
    for report in sorted(derivatives.rglob("*.html")):
        print(f"  report:        {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
