"""``python -m ctp_nipype.cli.demo OUT_DIR``: the ``make demo`` job.

Makes a small synthetic scan with a known CBF field, runs ``ctp-perfusion``
with the three SVD methods on it, and prints how the estimated CBF compares
with the truth.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nb
import numpy as np

from ..io import write_curves_tsv, write_json, write_nifti
from ..perfusion.synthetic import synthetic_scan
from . import perfusion


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "demo_output")
    inputs = out / "inputs"
    scan = synthetic_scan(shape=(48, 48, 4), n_frames=60, noise_sd=3.0, seed=1)
    scan_file = write_nifti(inputs / "sub-demo_ctp.nii.gz", scan.hu, scan.affine)
    write_json(inputs / "sub-demo_ctp.json", {"FrameTimesStart": scan.frame_times.tolist(), "Units": "HU"})
    aif_file = write_curves_tsv(inputs / "sub-demo_aif.tsv", {"time": scan.frame_times, "aif": scan.aif_hu})
    write_nifti(inputs / "sub-demo_truth_cbf.nii.gz", scan.cbf, scan.affine)
    maps = out / "maps"
    code = perfusion.main([str(scan_file), str(maps), "--aif", str(aif_file), "--method", "ssvd", "csvd", "osvd"])
    if code:
        return code
    print("\nCBF estimated / true (median over the scan, noise SD 3 HU):")
    for method in ("ssvd", "csvd", "osvd"):
        cbf = np.asarray(nb.load(maps / f"sub-demo_desc-{method}_cbf.nii.gz").dataobj)
        print(f"  {method}: {np.median(cbf / scan.cbf):.3f}")
    print(f"\nInputs in {inputs}, maps in {maps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
