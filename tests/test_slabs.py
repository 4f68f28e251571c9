"""Slabs: the maps do not depend on how a scan is split; chunked I/O and the working grid are exact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.interfaces.slabs import JoinSlabs, SplitSlabs
from ctp_nipype.interfaces.svd import SVDDeconvolution
from ctp_nipype.io import write_curves_tsv, write_nifti
from ctp_nipype.perfusion import working_grid
from ctp_nipype.sims.phantom import make_phantom
from ctp_nipype.slabs import MAX_SLAB_SERIES_BYTES, FrameWriter, iter_frames, plan_slabs

SVD_MAPS = ("cbf", "cbv", "mtt", "tmax", "residue")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """The small phantom (60 x 60 x 4 x 60) as files: series with its timing sidecar, brain mask, AIF TSV."""
    root = tmp_path_factory.mktemp("slabs")
    ph = make_phantom("small", seed=2)
    header = nb.Nifti1Header()
    header.set_data_shape(ph.hu.shape)
    header.set_zooms(tuple(ph.voxel_size_mm) + (1.0,))
    header.set_xyzt_units("mm", "sec")
    series = write_nifti(root / "sub-01_ctp.nii.gz", ph.hu, ph.affine, header,
                         {"FrameTimesStart": ph.frame_times.tolist()})
    mask = write_nifti(root / "brain.nii.gz", ph.brain_mask.astype(np.uint8), ph.affine, header, dtype=np.uint8)
    aif = write_curves_tsv(root / "aif.tsv", {"time": ph.frame_times, "aif": ph.aif})
    return {"root": root, "series": str(series), "mask": str(mask), "aif": str(aif), "phantom": ph}


def _run(interface, cwd):
    cwd.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return interface.run().outputs
    finally:
        os.chdir(here)


def _split_and_join(scan, method, n_slabs, cwd, working_voxel_mm=None):
    split = SplitSlabs(in_file=scan["series"], mask_file=scan["mask"], n_slabs=n_slabs)
    if working_voxel_mm is not None:
        split.inputs.working_voxel_mm = working_voxel_mm
    slabs = _run(split, cwd / "split")
    per_slab = [
        _run(SVDDeconvolution(in_file=f, mask_file=m, aif_file=scan["aif"], method=method, out_prefix="sub-01"),
             cwd / f"slab{i}")
        for i, (f, m) in enumerate(zip(slabs.slab_files, slabs.mask_files))
    ]
    join = JoinSlabs(map_files=[[getattr(o, name) for o in per_slab] for name in SVD_MAPS], plan_file=slabs.plan_file,
                     template_file=scan["series"], mask_file=scan["mask"], method=method, out_prefix="sub-01",
                     sources=[scan["series"], scan["aif"]])
    return _run(join, cwd / "join"), slabs


@pytest.fixture(scope="module")
def whole_scan(scan):
    """Each SVD method's maps from one run on the whole scan (no slabs)."""
    return {
        method: _run(SVDDeconvolution(in_file=scan["series"], mask_file=scan["mask"], aif_file=scan["aif"],
                                      method=method, out_prefix="sub-01"), scan["root"] / f"whole_{method}")
        for method in ("ssvd", "csvd", "osvd")
    }


@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd"])
@pytest.mark.parametrize("n_slabs", [1, 2, 4])
def test_slab_maps_are_bitwise_those_of_the_whole_scan(scan, whole_scan, method, n_slabs, tmp_path):
    joined, slabs = _split_and_join(scan, method, n_slabs, tmp_path)
    assert len(slabs.slab_files) == n_slabs
    for name in SVD_MAPS:
        expected = nb.load(getattr(whole_scan[method], name))
        got = nb.load(getattr(joined, name))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got.affine, expected.affine)
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj)), (method, n_slabs, name)
    sidecar = json.loads(Path(joined.cbf).with_suffix("").with_suffix(".json").read_text())
    whole = json.loads(Path(whole_scan[method].cbf).with_suffix("").with_suffix(".json").read_text())
    assert sidecar["FlaggedVoxels"] == whole["FlaggedVoxels"]
    assert sidecar["Sources"] == whole["Sources"]
    assert sidecar["Slabs"]["Count"] == n_slabs


def test_working_grid_keeps_a_noise_free_constant_tissue_exact(scan, tmp_path):
    """Every brain voxel with the same curve: the binned maps equal the scan-grid maps exactly."""
    ph = scan["phantom"]
    grey = ph.labels == 1
    hu = ph.hu.copy()
    hu[ph.brain_mask] = np.median(ph.hu[grey], axis=0)  # one curve in the whole brain
    root = tmp_path / "constant"
    header = nb.load(scan["series"]).header
    constant = dict(scan)
    constant["series"] = str(write_nifti(root / "c_ctp.nii.gz", hu, ph.affine, header,
                                         {"FrameTimesStart": ph.frame_times.tolist()}))
    fine = _run(SVDDeconvolution(in_file=constant["series"], mask_file=scan["mask"], aif_file=scan["aif"],
                                 method="ssvd", out_prefix="sub-01"), root / "fine")
    binned, _ = _split_and_join(constant, "ssvd", 2, root, working_voxel_mm=8.0)
    for name in ("cbf", "cbv", "residue"):
        a = np.asarray(nb.load(getattr(fine, name)).dataobj)
        b = np.asarray(nb.load(getattr(binned, name)).dataobj)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    sidecar = json.loads(Path(binned.cbf).with_suffix("").with_suffix(".json").read_text())
    assert sidecar["WorkingGrid"]["BinFactors"] == [2, 2]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3)),
    factors=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    value=st.floats(-1000, 1000, allow_nan=False, width=32),
    seed=st.integers(0, 2**16),
)
def test_binning_is_exact_on_constant_images_and_expands_back(shape, factors, value, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.6
    series = np.full(shape + (3,), value, np.float32)
    binned, binned_mask = working_grid.bin_in_plane(series, mask, factors)
    assert binned.shape == working_grid.binned_shape(shape, factors) + (3,)
    assert np.array_equal(binned[binned_mask], np.full((binned_mask.sum(), 3), np.float32(value)))
    assert not binned[~binned_mask].any()
    back = working_grid.expand_in_plane(binned, mask, factors)
    assert np.array_equal(back[mask], series[mask]) and not back[~mask].any()
    # any image: each block is the mean of its mask voxels (checked block by block)
    noisy = rng.normal(size=shape).astype(np.float32)
    means = working_grid.bin_in_plane(noisy, mask, factors)[0]
    fx, fy = factors
    for i, j, k in np.ndindex(means.shape):
        block = (slice(i * fx, (i + 1) * fx), slice(j * fy, (j + 1) * fy), k)
        inside = noisy[block][mask[block]]
        assert means[i, j, k] == pytest.approx(inside.mean() if inside.size else 0.0, rel=1e-5, abs=1e-6)


def test_binned_affine_puts_each_block_at_the_centre_of_its_voxels():
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    affine[:3, 3] = (-10, 20, 3)
    binned = working_grid.binned_affine(affine, (2, 3), first_slice=4)
    # block (0, 0) of slab slice 0: fine voxels x 0-1, y 0-2, z 4, whose centre is index (0.5, 1, 4)
    np.testing.assert_allclose(binned @ [0, 0, 0, 1], affine @ [0.5, 1.0, 4.0, 1.0])
    np.testing.assert_allclose(np.diag(binned)[:3], [1.0, 1.5, 5.0])


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 500), min_size=1, max_size=40), n_slabs=st.integers(1, 50))
def test_slab_plan_covers_every_slice_once(counts, n_slabs):
    bounds = plan_slabs(counts, 40, n_slabs=n_slabs)
    assert len(bounds) == min(n_slabs, len(counts))
    assert bounds[0][0] == 0 and bounds[-1][1] == len(counts)
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds[:-1], bounds[1:]))


def test_slab_count_follows_the_memory_available():
    """512 x 512 slices of 40 frames: less memory, more slabs; never fewer than the processes."""
    counts = [100_000] * 160
    plenty = plan_slabs(counts, 40, n_procs=2, slice_voxels=512 * 512, memory_bytes=1 << 40)
    tight = plan_slabs(counts, 40, n_procs=2, slice_voxels=512 * 512, memory_bytes=4 << 30)
    # however much memory, a slab holds at most MAX_SLAB_SERIES_BYTES of series: 6 slices of 42 MB
    assert len(plenty) == 27 and max(b - a for a, b in plenty) * 512 * 512 * 40 * 4 <= MAX_SLAB_SERIES_BYTES
    # half of 4 GiB at 24 bytes per series value holds 8 slices of 512 x 512 x 40: 2 slabs in flight of 4 each
    assert len(tight) == 40


def test_frames_stream_back_what_was_written(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 5, 3, 6)).astype(np.float32)
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    for name in ("x.nii", "x.nii.gz"):
        with FrameWriter(tmp_path / name, data.shape, affine) as out:
            for t in range(data.shape[3]):
                out.write(data[..., t])
        assert np.array_equal(np.asarray(nb.load(tmp_path / name).dataobj), data)
        assert np.array_equal(np.stack(list(iter_frames(tmp_path / name)), axis=-1), data)
    # a frame too few: no file left behind
    with pytest.raises(ValueError, match="frames written"):
        with FrameWriter(tmp_path / "short.nii.gz", data.shape, affine) as out:
            out.write(data[..., 0])
    assert not (tmp_path / "short.nii.gz").exists()


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 4)), n_frames=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_maps_written_from_the_masks_voxels_are_those_of_the_whole_arrays(tmp_path_factory, shape, n_frames, seed):
    """write_perfusion_maps(..., mask=m) with values[m] writes, bitwise, what it writes from the whole arrays
    with 0 outside the mask, non-finite values 0 in both; the header and sidecar the same."""
    from ctp_nipype.io import write_perfusion_maps

    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.6
    cbf = rng.normal(size=shape).astype(np.float32)
    residue = rng.normal(size=shape + (n_frames,)).astype(np.float32)
    cbf[rng.random(shape) < 0.1] = np.nan
    residue[rng.random(residue.shape) < 0.1] = -np.inf
    header = nb.Nifti1Header()
    header.set_data_shape((1, 1, 1, 1))
    header.set_zooms((0.5, 0.5, 5.0, 1.5))
    header.set_xyzt_units("mm", "sec")
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    whole = {"cbf": np.where(mask, cbf, 0), "residue": np.where(mask[..., None], residue, 0)}
    root = tmp_path_factory.mktemp("masked")
    written = {}
    for how, maps, kwargs in (("whole", whole, {}), ("masked", {"cbf": cbf[mask], "residue": residue[mask]},
                                                       {"mask": mask})):
        (root / how).mkdir()
        written[how] = write_perfusion_maps(root / how, "sub-01", "ssvd", maps, affine, header, {"Seed": seed},
                                            **kwargs)
    for name in ("cbf", "residue"):
        a, b = (nb.load(written[how][name]) for how in ("whole", "masked"))
        assert a.header.binaryblock == b.header.binaryblock
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.isfinite(np.asarray(b.dataobj)).all()
        assert json.loads(Path(str(written["whole"][name]).replace(".nii.gz", ".json")).read_text()) == \
            json.loads(Path(str(written["masked"][name]).replace(".nii.gz", ".json")).read_text())


def test_the_command_gives_the_same_maps_in_one_slab_and_in_parallel_slabs(tmp_path):
    """ctp-perfusion end to end: one slab in one process, and three slabs run by MultiProc on two."""
    from ctp_nipype.cli.perfusion import main as perfusion_main
    from ctp_nipype.cli.phantom import main as phantom_main

    assert phantom_main([str(tmp_path / "bids"), "--subjects", "1", "--size", "small", "--seed", "3"]) == 0
    scan = tmp_path / "bids" / "sub-01" / "ses-01" / "sub-01_ses-01_ctp.nii.gz"
    runs = {}
    for label, options in (("one", ["--slabs", "1", "--nprocs", "1"]), ("three", ["--slabs", "3", "--nprocs", "2"])):
        out = tmp_path / label
        assert perfusion_main([str(scan), str(out), "--method", "ssvd", "osvd", "--no-guided-filter",
                               "-w", str(tmp_path / f"work_{label}"), *options]) == 0
        runs[label] = out
    names = sorted(p.name for p in runs["one"].glob("*_desc-*svd_*.nii.gz"))
    # 2 methods x (cbf, cbv, mtt, tmax, residue), and the lesion masks made from them
    assert {f"sub-01_ses-01_desc-{m}_{k}.nii.gz" for m in ("ssvd", "osvd") for k in SVD_MAPS} <= set(names)
    for name in names:
        one = np.asarray(nb.load(runs["one"] / name).dataobj)
        three = np.asarray(nb.load(runs["three"] / name).dataobj)
        assert np.array_equal(one, three), name
    sidecar = json.loads((runs["three"] / "sub-01_ses-01_desc-osvd_cbf.json").read_text())
    assert sidecar["Slabs"]["Count"] == 3


def test_network_maps_do_not_depend_on_the_split(scan, tmp_path):
    """The network on the whole scan and on 3 slabs: the same maps to float32 rounding (batches differ)."""
    from ctp_nipype.interfaces.transformer import TransformerPerfusion
    from ctp_nipype.nn.weights import shipped_weights_available

    if not shipped_weights_available():
        pytest.skip("no network weights shipped in this installation")
    names = ("cbf", "cbv", "mtt", "bad", "residue", "localaif")
    whole = _run(TransformerPerfusion(in_file=scan["series"], mask_file=scan["mask"], aif_file=scan["aif"],
                                      device="cpu", out_prefix="sub-01"), tmp_path / "whole")
    split = _run(SplitSlabs(in_file=scan["series"], mask_file=scan["mask"], n_slabs=3), tmp_path / "split")
    per_slab = [
        _run(TransformerPerfusion(in_file=f, mask_file=m, aif_file=scan["aif"], device="cpu", out_prefix="sub-01"),
             tmp_path / f"slab{i}")
        for i, (f, m) in enumerate(zip(split.slab_files, split.mask_files))
    ]
    joined = _run(JoinSlabs(map_files=[[getattr(o, n) for o in per_slab] for n in names], plan_file=split.plan_file,
                            template_file=scan["series"], mask_file=scan["mask"], method="transformer",
                            out_prefix="sub-01"), tmp_path / "join")
    for name in names:
        expected = np.asarray(nb.load(getattr(whole, name)).dataobj)
        got = np.asarray(nb.load(getattr(joined, name)).dataobj)
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_a_lazily_read_series_with_nan_in_the_mask_is_refused(scan, tmp_path):
    """An uncompressed float32 series is read lazily (only the mask's curves): a NaN among them is still refused,
    as load_ctp refuses it in a series it reads whole; a NaN outside the mask is never read."""
    from ctp_nipype.io import InputError

    img = nb.load(scan["series"])
    hu = np.asarray(img.dataobj, np.float32)
    mask = np.asarray(nb.load(scan["mask"]).dataobj) > 0
    sidecar = json.loads(Path(scan["series"].replace(".nii.gz", ".json")).read_text())
    inside, outside = np.argwhere(mask)[0], np.argwhere(~mask)[0]
    for where, refused in ((outside, False), (inside, True)):
        bad = hu.copy()
        bad[tuple(where)] = np.nan
        path = write_nifti(tmp_path / f"sub-{int(refused)}_ctp.nii", bad, img.affine, img.header, sidecar)
        node = SVDDeconvolution(in_file=str(path), aif_file=scan["aif"], aif_column="aif", mask_file=scan["mask"],
                                method="ssvd")
        os.chdir(tmp_path)
        if refused:
            with pytest.raises(InputError, match="NaN or infinite"):
                node.run()
        else:
            assert node.run().outputs.flagged_voxels == 0
