"""Chunks of slices (ctp_nipype.perfusion.chunks): what is read chunk by chunk equals the whole array's."""

from __future__ import annotations

import nibabel as nb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.perfusion.chunks import (
    chunk_bytes,
    frame_extremes,
    iter_masked_curves,
    masked_curves,
    read_frame,
    read_slices,
    slice_chunks,
)

from helpers import nifti_proxy


def _series(seed, shape, fortran):
    rng = np.random.default_rng(seed)
    series = rng.normal(30, 50, shape).astype(np.float32)
    mask = rng.random(shape[:3]) < rng.uniform(0.05, 0.9)
    return (np.asfortranarray(series) if fortran else series), mask


def series_cases(test):
    """Run ``test`` on small series of every layout, read in chunks from one slice to all at once."""
    return settings(max_examples=40, deadline=None)(given(
        seed=st.integers(0, 1000),
        shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 4)),
        fortran=st.booleans(), max_bytes=st.sampled_from([1, 64, 1 << 20]),
    )(test))


@series_cases
def test_masked_curves_chunk_by_chunk_are_the_masked_array(seed, shape, fortran, max_bytes):
    series, mask = _series(seed, shape, fortran)
    assert np.array_equal(masked_curves(series, mask, max_bytes), series[mask])
    seen = np.zeros(int(mask.sum()), int)
    for rows, curves in iter_masked_curves(series, mask, max_bytes):
        assert curves.flags.c_contiguous and curves.dtype == np.float32
        assert np.array_equal(curves, series[mask][rows])
        seen[rows] += 1
    assert (seen == 1).all()  # every voxel once


def test_a_nifti_is_read_through_its_memory_map_as_nibabel_reads_it(tmp_path):
    series, mask = _series(3, (7, 5, 6, 9), fortran=False)
    proxy = nifti_proxy(tmp_path, series)
    for z0, z1 in slice_chunks(proxy.shape, max_bytes=7 * 5 * 9 * 4 * 2):
        block = read_slices(proxy, z0, z1)
        assert block.dtype == np.float32 and np.array_equal(block, series[:, :, z0:z1])
    assert np.array_equal(masked_curves(proxy, mask, max_bytes=1), series[mask])
    few = np.zeros(mask.shape, bool)
    few[1, 2, 3] = few[6, 0, 0] = True  # fewer voxels than pages: read alone
    assert np.array_equal(masked_curves(proxy, few), series[few])
    # a scaled file is not mapped: read through nibabel, scaled
    img = nb.Nifti1Image(series, np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)
    nb.save(img, str(tmp_path / "scaled.nii"))
    scaled = nb.load(str(tmp_path / "scaled.nii"), mmap=False).dataobj
    assert np.allclose(masked_curves(scaled, mask, max_bytes=1), np.asarray(scaled)[mask])


@series_cases
def test_frame_extremes_and_frames_are_the_whole_arrays(seed, shape, fortran, max_bytes):
    series, _ = _series(seed, shape, fortran)
    top, low = frame_extremes(series, max_bytes)
    assert top.dtype == np.float32 and np.array_equal(top, series.max(axis=-1))
    assert low == series.min()
    for frame in range(shape[3]):
        assert np.array_equal(read_frame(series, frame), series[..., frame])


def test_frames_of_a_nifti_come_from_its_memory_map(tmp_path):
    series, _ = _series(5, (6, 4, 3, 5), fortran=False)
    proxy = nifti_proxy(tmp_path, series)
    top, low = frame_extremes(proxy, max_bytes=6 * 4 * 5 * 4)  # one slice per chunk
    assert np.array_equal(top, series.max(axis=-1)) and low == series.min()
    for frame in range(5):
        got = read_frame(proxy, frame)
        assert got.dtype == np.float32 and got.flags.writeable and np.array_equal(got, series[..., frame])


def test_chunk_size_follows_the_available_memory():
    assert chunk_bytes(64 << 30) == 256 << 20  # capped
    assert chunk_bytes(4 << 30) == 128 << 20  # 1/32 of it
    assert chunk_bytes(100 << 20) == 16 << 20  # floor
