"""A synthetic 4D CTP scan with known maps, for tests, benchmarks and a quick demo.

Not an anatomical phantom (see :mod:`ctp_nipype.sims.phantom`): smooth
CBF and MTT fields over a block of voxels, an exponential residue, one
gamma-variate AIF, tissue curves from the trapezoidal convolution, a
35 HU baseline and Gaussian noise. Vectorised: a 1M-voxel scan takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.convolution import convolve
from .simulate import flow_scaled_residue, gamma_variate_aif


@dataclass
class SyntheticScan:
    hu: np.ndarray  # (x, y, z, t) float32, HU
    aif_hu: np.ndarray  # (t,) HU, baseline included
    frame_times: np.ndarray  # (t,) s
    cbf: np.ndarray  # ml/100 g/min
    cbv: np.ndarray  # ml/100 g
    mtt: np.ndarray  # s
    affine: np.ndarray
    baseline_hu: float


def synthetic_scan(
    shape=(32, 32, 4),
    n_frames=60,
    frame_interval=1.0,
    noise_sd=2.0,
    seed=0,
    baseline_hu=35.0,
    aif_baseline_hu=40.0,
    kappa_h=KAPPA_H,
    rho=RHO,
    voxel_size=(1.0, 1.0, 5.0),
):
    """Make a synthetic scan whose CBF varies smoothly from 10 to 70 ml/100 g/min along x.

    MTT varies from 3 to 9 s along y; CBV = CBF * MTT / 60. The tissue curves
    are the trapezoidal convolution of the AIF and the flow-scaled exponential
    residue (the SVD methods' forward model), so a noise-free scan is an exact
    test of the deconvolution's constants.

    Examples
    --------
    >>> scan = synthetic_scan(shape=(4, 4, 1), n_frames=30, noise_sd=0)
    >>> scan.hu.shape, scan.hu.dtype
    ((4, 4, 1, 30), dtype('float32'))
    """
    rng = np.random.default_rng(seed)
    frame_times = np.arange(n_frames) * float(frame_interval)
    aif = gamma_variate_aif(frame_times, t0=8.0, alpha=3.0, beta=1.5, peak=350.0)
    x = np.linspace(0, 1, shape[0])[:, None, None]
    y = np.linspace(0, 1, shape[1])[None, :, None]
    cbf = np.broadcast_to(10 + 60 * x, shape).astype(np.float64)
    mtt = np.broadcast_to(3 + 6 * y, shape).astype(np.float64)
    cbv = cbf * mtt / 60.0
    residue = np.exp(-frame_times / mtt.reshape(-1, 1))
    flow_residue = flow_scaled_residue(residue, cbf.reshape(-1), kappa_h, rho)
    tissue = np.empty((cbf.size, n_frames), dtype=np.float32)
    step = 65536
    for start in range(0, cbf.size, step):  # chunks bound the memory of the FFTs
        tissue[start : start + step] = convolve(aif, flow_residue[start : start + step], frame_interval)
    hu = tissue.reshape(shape + (n_frames,)) + np.float32(baseline_hu)
    if noise_sd:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd)
    affine = np.diag(list(voxel_size) + [1.0])
    return SyntheticScan(
        hu=hu,
        aif_hu=aif + aif_baseline_hu,
        frame_times=frame_times,
        cbf=cbf.astype(np.float32),
        cbv=cbv.astype(np.float32),
        mtt=mtt.astype(np.float32),
        affine=affine,
        baseline_hu=baseline_hu,
    )
