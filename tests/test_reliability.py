"""Reliability (issue 10): odd curves, memory faults, determinism, killed runs, no unsafe loading or shells.

* hypothesis feeds the array functions flat, negative, spiky and huge curves: every output map is finite,
  unfittable voxels are 0 and counted;
* the batch runner shrinks batches when memory runs out and hands a GPU's remaining voxels to the CPU;
* ``ctp-perfusion`` gives bit-identical maps run to run on the CPU, and a run killed mid-way (SIGKILL)
  leaves no map that looks complete and, started again with the same work folder, finishes with the same maps;
* the package never loads pickles, never calls ``torch.load`` without ``weights_only=True`` and never runs a
  subprocess through a shell.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctp_nipype.nn.inference import cpu_workers, estimate_curves, run_batches, run_network
from ctp_nipype.nn.model import PerfusionTransformer
from ctp_nipype.nn.weights import save_weights
from ctp_nipype.sims.simulate import gamma_variate_aif
from ctp_nipype.perfusion.svd import SVDModel

REPO = Path(__file__).resolve().parents[1]
N_FRAMES = 40
TIMES = np.arange(N_FRAMES, dtype=float)
AIF = gamma_variate_aif(TIMES, 6.0, 3.0, 1.5, 300.0)


def odd_curves(kind, scale, seed):
    """Six curves of one odd kind (HU above baseline), as a (6, N_FRAMES) array."""
    rng = np.random.default_rng(seed)
    curves = np.zeros((6, N_FRAMES))
    if kind == "flat":
        curves[:] = scale
    elif kind == "negative":
        curves[:] = -abs(scale) * (1 + rng.random((6, N_FRAMES)))
    elif kind == "spike":
        curves[np.arange(6), rng.integers(0, N_FRAMES, 6)] = scale * 1e3
    elif kind == "noise":
        curves[:] = rng.normal(0, abs(scale) + 1e-3, (6, N_FRAMES))
    elif kind == "huge":
        curves[:] = scale * 1e6 * rng.random((6, N_FRAMES))
    elif kind == "step":
        curves[:, N_FRAMES // 2 :] = scale
    return curves


KINDS = st.sampled_from(["flat", "negative", "spike", "noise", "huge", "step"])
SCALES = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(kind=KINDS, scale=SCALES, seed=st.integers(0, 1000), method=st.sampled_from(["ssvd", "csvd", "osvd"]))
def test_svd_maps_of_odd_curves_are_finite(kind, scale, seed, method):
    fit = SVDModel(AIF, TIMES, method=method).fit(odd_curves(kind, scale, seed))
    for name in ("cbf", "cbv", "mtt", "tmax", "residue"):
        values = getattr(fit, name)
        assert np.all(np.isfinite(values)), f"{method} {name} of {kind} curves"
    assert np.all(fit.mtt >= 0) and np.all(fit.tmax >= 0)
    # a flagged voxel whose residue met the oscillation target could not be fitted at all: 0 in every map
    # (oSVD also flags voxels that still oscillate at the largest threshold; they keep that fit)
    unfittable = fit.flagged & (fit.oscillation_index <= 0.035)
    for name in ("cbf", "mtt", "tmax"):
        assert np.all(getattr(fit, name)[unfittable] == 0), name
    # and a voxel without a positive residue is flagged
    assert np.all(fit.flagged[fit.residue.max(axis=-1) <= 0])


def test_svd_non_finite_voxels_are_zero_and_flagged():
    curves = odd_curves("noise", 10.0, 0)
    curves[1, 3] = np.nan
    curves[4, 7] = np.inf
    fit = SVDModel(AIF, TIMES, method="osvd").fit(curves)
    assert fit.flagged[1] and fit.flagged[4]
    for name in ("cbf", "cbv", "mtt", "tmax"):
        values = getattr(fit, name)
        assert np.all(np.isfinite(values)) and values[1] == 0 and values[4] == 0


@pytest.fixture(scope="module")
def random_network():
    torch.manual_seed(0)
    return PerfusionTransformer().eval()


@settings(max_examples=15, deadline=None)
@given(kind=KINDS, scale=SCALES, seed=st.integers(0, 1000))
def test_network_maps_of_odd_curves_are_finite_and_physical(random_network, kind, scale, seed):
    out = estimate_curves(AIF, odd_curves(kind, scale, seed), TIMES, model=random_network)
    for name in ("cbf", "cbv", "mtt", "bad", "residue", "local_aif"):
        assert np.all(np.isfinite(out[name])), name
    residue = out["residue"]
    assert np.all(residue >= 0) and np.all(np.diff(residue, axis=1) <= 1e-7)
    # finite inputs in float32 give finite outputs: nothing needed flagging
    assert not out["flagged"].any()


# ------------------------------------------------------------------------------------ memory faults


def _recorder(fail):
    calls = []

    def step(start, stop, device):
        if fail(stop - start, torch.device(device)):
            raise RuntimeError(f"{torch.device(device).type.upper()} out of memory. Tried to allocate 2.00 GiB")
        calls.append((start, stop, torch.device(device).type))

    return step, calls


def test_cpu_threads_share_the_voxels_and_give_the_single_thread_outputs(random_network):
    """On the CPU the voxels are split between threads of one core each: every voxel is computed once, with
    the outputs of the one-thread path, and torch's thread count is restored."""
    rng = np.random.default_rng(3)
    curves = (rng.random((700, 1)) * np.exp(-0.5 * ((TIMES - 20) / 5) ** 2)
              + 0.01 * rng.standard_normal((700, TIMES.size))).astype(np.float32)
    aif = (AIF / AIF.max()).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run_network(random_network, aif, curves, TIMES, "cpu", batch_size=128)
        torch.set_num_threads(3)
        assert cpu_workers(700, 128) == 3 and cpu_workers(100, 128) == 1
        shared = run_network(random_network, aif, curves, TIMES, "cpu", batch_size=128)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert np.all(single["bad"] > 0)  # Softplus: a voxel left unwritten would read 0
    for key in ("local_aif", "residue", "bad"):
        np.testing.assert_allclose(shared[key], single[key], rtol=1e-4, atol=1e-5 * np.abs(single[key]).max())


def test_out_of_memory_shrinks_batches_and_covers_every_voxel_once():
    step, calls = _recorder(lambda size, device: size > 300)
    with pytest.warns(RuntimeWarning, match="out of memory with 1000 voxels per batch; retrying with batches of 500"):
        device = run_batches(step, 2500, 1000, "cpu", min_batch=64)
    assert device.type == "cpu"
    covered = np.zeros(2500, int)
    for start, stop, _ in calls:
        covered[start:stop] += 1
    assert np.all(covered == 1) and max(stop - start for start, stop, _ in calls) <= 300


def test_gpu_out_of_memory_hands_the_rest_to_the_cpu():
    step, calls = _recorder(lambda size, device: device.type == "cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        device = run_batches(step, 1000, 512, "cuda", cpu_batch_size=400, min_batch=64)
    assert device.type == "cpu"
    assert any("running the remaining 1000 voxels on the CPU" in str(w.message) for w in caught)
    assert {kind for *_, kind in calls} == {"cpu"} and calls[0][1] - calls[0][0] == 400
    assert sum(stop - start for start, stop, _ in calls) == 1000


def test_cpu_out_of_memory_at_the_smallest_batch_is_raised_and_other_errors_pass_through():
    step, _ = _recorder(lambda size, device: True)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="out of memory"):
        run_batches(step, 1000, 256, "cpu", min_batch=64)

    def broken(start, stop, device):
        raise ValueError("not a memory error")

    with pytest.raises(ValueError, match="not a memory error"):
        run_batches(broken, 10, 5, "cpu")


# ------------------------------------------------------------------- static checks of the package


def _package_sources():
    return sorted((REPO / "ctp_nipype").rglob("*.py")) + sorted((REPO / "bids_app").rglob("*.py"))


def test_no_pickle_no_unsafe_torch_load_no_shell():
    problems = []
    for path in _package_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "shelve") for n in names):
                    problems.append(f"{where}: imports a pickle module")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load") or name == "load" and "weights_only" in keywords:
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(f"{where}: {name} runs a shell")
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: subprocess with shell={ast.unparse(shell)}")
    assert not problems, "\n".join(problems)


def test_the_static_check_catches_what_it_looks_for(tmp_path, monkeypatch):
    """The check above is not vacuous: a module with each forbidden call fails it."""
    bad = tmp_path / "ctp_nipype" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import pickle\nimport subprocess, torch\nsubprocess.run('ls', shell=True)\ntorch.load('x')\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError) as failed:
        test_no_pickle_no_unsafe_torch_load_no_shell()
    text = str(failed.value)
    assert "pickle" in text and "shell=True" in text and "weights_only" in text


# ------------------------------------------------------- determinism and a run killed mid-way


@pytest.fixture(scope="module")
def scan_and_weights(tmp_path_factory):
    """A small phantom scan (in a BIDS dataset) and a weights file of a randomly initialised network."""
    from ctp_nipype.sims.dataset import write_phantom_dataset

    root = tmp_path_factory.mktemp("reliability")
    write_phantom_dataset(root / "bids", subjects=1, size="small", seed=7)
    scan = root / "bids" / "sub-01" / "ses-01" / "sub-01_ses-01_ctp.nii.gz"
    torch.manual_seed(1)
    weights = save_weights(PerfusionTransformer(), root / "random.safetensors", {"recipe": "test"})
    return root, scan, weights


def _perfusion_command(scan, out, work, weights):
    return [sys.executable, "-m", "ctp_nipype.cli.perfusion", str(scan), str(out), "-w", str(work),
            "--method", "ssvd", "osvd", "transformer", "--weights", str(weights), "--device", "cpu",
            "--nprocs", "1"]


def _maps(out):
    return {p.name: np.asanyarray(nb.load(p).dataobj) for p in sorted(Path(out).glob("*.nii.gz"))}


def _run(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def reference_maps(scan_and_weights):
    root, scan, weights = scan_and_weights
    result = _run(_perfusion_command(scan, root / "out_a", root / "work_a", weights))
    assert result.returncode == 0, result.stderr
    maps = _maps(root / "out_a")
    assert len(maps) >= 12
    return maps


def test_same_input_gives_bit_identical_maps(scan_and_weights, reference_maps):
    root, scan, weights = scan_and_weights
    result = _run(_perfusion_command(scan, root / "out_b", root / "work_b", weights))
    assert result.returncode == 0, result.stderr
    again = _maps(root / "out_b")
    assert again.keys() == reference_maps.keys()
    for name, values in reference_maps.items():
        assert np.array_equal(values, again[name]), f"{name} differs between two runs"
        assert np.all(np.isfinite(values)), f"{name} has NaN or infinite values"


def test_killed_run_leaves_no_complete_looking_map_and_resumes_to_the_same_maps(scan_and_weights, reference_maps):
    root, scan, weights = scan_and_weights
    out, work = root / "out_killed", root / "work_killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_perfusion_command(scan, out, work, weights), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    # kill it once the preprocessing has finished and the perfusion steps are under way
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(work.rglob("ssvd*/result_*.pklz")) or any(work.rglob("*osvd*/result_*.pklz")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed; the test needs a slower step"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

    # whatever the killed run left in the output folder is either absent or whole: every map loads, with
    # its sidecar; the atomic writers' temporary files are hidden (.name.random.tmp), never a map's name
    for path in out.glob("*.nii.gz") if out.exists() else []:
        assert np.all(np.isfinite(np.asanyarray(nb.load(path).dataobj))), path.name
        assert path.with_name(path.name.replace(".nii.gz", ".json")).exists(), path.name
    assert len(_maps(out) if out.exists() else {}) < len(reference_maps), "the run was killed too late"

    result = _run(_perfusion_command(scan, out, work, weights))
    assert result.returncode == 0, result.stderr
    resumed = _maps(out)
    assert resumed.keys() == reference_maps.keys()
    for name, values in reference_maps.items():
        assert np.array_equal(values, resumed[name]), f"{name} differs after the resumed run"
