"""How the network's CBF depends on the residue's shape: median CBF ratio per shape and noise level.

    python benchmarks/studies/residue_shape.py [--weights shipped RUN/best.safetensors ...] [--n-curves 2000]

The paper's test sets use an exponential residue (alpha = 1), the phantom a gamma residue of shape 3 and the
training draws alpha over [0.5, 100], so a network can score well on the test sets and still misjudge the
phantom's grey matter. This prints, for each weights file, the median ratio of estimated to true CBF of
``--n-curves`` curves per row at CBF 60 ml/100 g/min, MTT 4 s (grey matter), no dispersion (T_A = 0), 1 s
frames, 80 frames and a gamma-variate AIF (delays drawn from the training range), for residue shapes
alpha 1, 3 and 10 and noise free, 20 dB and 12 dB (the same curves for every weights file).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ctp_nipype.nn.inference import estimate_curves
from ctp_nipype.nn.weights import SHIPPED_WEIGHTS, load_model
from ctp_nipype.sims.simulate import simulate_curves

ALPHAS = (1.0, 3.0, 10.0)
SNRS_DB = (np.inf, 20.0, 12.0)
CBF_TRUE = 60.0  # ml/100 g/min
MTT_TRUE = 4.0  # s


def median_cbf_ratios(model, n_curves=2000, seed=0, alphas=ALPHAS, snrs_db=SNRS_DB):
    """``{(alpha, snr_db): median CBF ratio}`` of ``model`` on the grey-matter curves described above."""
    ratios = {}
    for a, alpha in enumerate(alphas):
        for s, snr_db in enumerate(snrs_db):
            sim = simulate_curves(n_curves, np.random.default_rng([seed, a, s]), frame_interval=1.0, n_frames=80,
                                  cbf=CBF_TRUE, mtt=MTT_TRUE, alpha=alpha, t_a=0.0, snr_db=snr_db, aif_type="gamma")
            maps = estimate_curves(sim.global_aif, sim.tissue, sim.frame_times, model=model)
            ratios[alpha, snr_db] = float(np.median(maps["cbf"] / CBF_TRUE))
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["shipped"],
                        help="weights files ('shipped' for the package's)")
    parser.add_argument("--n-curves", type=int, default=2000)
    args = parser.parse_args(argv)
    header = " | ".join(f"alpha {a:g}, {'noise free' if np.isinf(s) else f'{s:g} dB'}"
                        for a in ALPHAS for s in SNRS_DB)
    print(f"weights | {header} | seconds")
    for weights in args.weights:
        start = time.perf_counter()
        model = load_model(SHIPPED_WEIGHTS if weights == "shipped" else weights)
        ratios = median_cbf_ratios(model, n_curves=args.n_curves)
        cells = " | ".join(f"{ratios[a, s]:.2f}" for a in ALPHAS for s in SNRS_DB)
        print(f"{weights} | {cells} | {time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
