"""Guided filter: the He et al. identities, noise reduction and edges."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ctp_nipype.perfusion import stats
from ctp_nipype.perfusion.filtering import guided_filter
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom

from ctp_nipype.validation import exclusions, voxel_volume_ml
from ctp_nipype.validation import lesion_truth as truth

from helpers import svd_maps


@settings(max_examples=20, deadline=None)
@given(value=st.floats(-100, 500), radius=st.integers(1, 3), mode=st.sampled_from(["2d", "3d"]))
def test_constant_frames_are_unchanged(value, radius, mode):
    rng = np.random.default_rng(0)
    guide = rng.uniform(0, 80, (9, 9, 4))
    frames = np.full((9, 9, 4, 3), value, np.float32)
    assert np.allclose(guided_filter(frames, guide, radius=radius, mode=mode), value, atol=1e-3 * max(1, abs(value)))


def test_frames_equal_to_guidance_keep_strong_edges():
    guide = np.zeros((20, 20, 2))
    guide[10:] = 80.0
    out = guided_filter(guide[..., None], guide)[..., 0]
    # in a window straddling the edge, with a fraction p of it on the high side, the normalised
    # guidance has variance p (1 - p) >= 0.16, so a = var / (var + eps) >= 0.94: at most 6% of the step lost
    assert np.abs(out - guide).max() <= 0.06 * 80.0
    # while a plain box mean of the same radius loses 40% of it next to the edge
    box = ndimage.uniform_filter(guide, size=(5, 5, 1))
    assert np.abs(box - guide).max() >= 0.4 * 80.0 - 1e-3


def test_chunking_and_frame_order_do_not_matter():
    rng = np.random.default_rng(1)
    frames = rng.normal(40, 10, (12, 12, 3, 7)).astype(np.float32)
    whole = guided_filter(frames, chunk_frames=7)
    assert np.allclose(guided_filter(frames, chunk_frames=2), whole, atol=1e-4)
    # each frame is filtered alone with the shared guidance
    guide = frames.mean(axis=-1)
    assert np.allclose(guided_filter(frames[..., 3], guide), whole[..., 3], atol=1e-4)


@pytest.mark.parametrize("size, radius", [("small", 1), ("small", 2), ("demo", 1)])
def test_halves_noise_in_grey_matter_of_the_phantom(size, radius):
    """Issue 5: noise SD in homogeneous grey matter at least halved.

    The noise after the filter is the filtered noisy phantom minus the filtered noise-free one, each
    with its own guidance (so the guidance's own noise counts), at the default radius on both
    phantoms (1.88 mm: 1 voxel of 4 or 1.875 mm) and at the paper's 2 voxels.
    """
    noisy = make_phantom(size, seed=0)
    clean = make_phantom(size, seed=0, noise_sd_hu=0)
    noise_after = guided_filter(noisy.hu, radius=radius) - guided_filter(clean.hu, radius=radius)
    grey = ndimage.binary_erosion(noisy.labels == PhantomLabel.GREY_MATTER, np.ones((3, 3, 1)))
    before = (noisy.hu - clean.hu)[grey].std()
    assert before == pytest.approx(8.0, rel=0.05)
    assert noise_after[grey].std() <= 0.5 * before


@pytest.mark.parametrize("seed", [0, 4])
def test_the_filter_makes_the_lesion_measurable_at_the_phantoms_noise(seed):
    """Issue 5: what the filter does to the lesion a user measures, at the phantom's 8 HU (sSVD, true AIF).

    Without the filter, noise leaves Tmax > 6 s in half the healthy brain and the core (relative CBF < 30%)
    is not found; with it, the hypoperfused tissue matches the truth closely and the core roughly. The
    hyperacute core does not show in the time-averaged guidance, so there the filter blurs like a box mean of
    its radius and the core's Dice stays near 0.5 (``benchmarks/studies/phantom_steps.py --tables 4``;
    docs/validation.md).
    """
    ph = make_phantom("small", seed=seed)
    core, hypoperfused = truth(ph)
    csf, vessels = exclusions(ph)
    voxel_ml = voxel_volume_ml(ph)

    def lesion(phantom):
        maps = svd_maps(phantom, ("ssvd",))
        return stats.lesion_measures(maps["ssvd", "cbf"], maps["ssvd", "tmax"], ph.brain_mask, ph.affine, voxel_ml,
                                     csf=csf, vessels=vessels)

    raw, filtered = lesion(ph), lesion(replace(ph, hu=guided_filter(ph.hu, radius=1)))
    assert stats.dice(raw.hypoperfused, hypoperfused) < 0.75 and stats.dice(raw.core, core) < 0.2
    assert stats.dice(filtered.hypoperfused, hypoperfused) >= 0.9
    assert filtered.hypoperfused_volume_ml == pytest.approx(hypoperfused.sum() * voxel_ml, rel=0.2)
    assert stats.dice(filtered.core, core) >= 0.4


@settings(max_examples=30, deadline=None)
@given(
    nx=st.integers(1, 12), ny=st.integers(1, 12), nz=st.integers(1, 3), nt=st.integers(1, 5),
    radius=st.integers(1, 4), fortran=st.booleans(), seed=st.integers(0, 2**16),
)
def test_blocked_2d_path_equals_the_filter_on_the_whole_array(nx, ny, nz, nt, radius, fortran, seed):
    """The slice-by-slice, block-by-block 2D path gives the guided filter computed on the whole 4D array
    (float64), in either memory order."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(40, 30, (nx, ny, nz, nt)).astype(np.float32)
    if fortran:
        frames = np.asfortranarray(frames)
    guide_hu = frames.mean(axis=-1)
    out = guided_filter(frames, guide_hu, radius=radius, eps=0.01, chunk_frames=2)

    def box(x):
        return ndimage.uniform_filter(x, size=(2 * radius + 1, 2 * radius + 1, 1, 1), mode="reflect")

    guide = np.clip(guide_hu / 80.0, 0, 1)[..., None].astype(np.float64)
    p = frames.astype(np.float64)
    mean_i, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_i * mean_p) / (box(guide * guide) - mean_i**2 + 0.01)
    expected = box(a) * guide + box(mean_p - a * mean_i)
    assert out.shape == frames.shape and out.dtype == np.float32
    # the result comes back in the input's memory order
    assert out.flags.f_contiguous if fortran else out.flags.c_contiguous
    assert np.allclose(out, expected, atol=2e-3)

