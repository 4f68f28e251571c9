"""Runs that go wrong part-way (issue 33): one scan's failure, a full disk, Ctrl-C, two runs at once, the work
directory's owner, odd file names, and the timing rules of :mod:`ctp_nipype.perfusion.timing`."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype.cli import bids_app
from ctp_nipype.cli import perfusion as perfusion_cli
from ctp_nipype.cli._workdir import default_work_dir, exclusive_lock, private_dir
from ctp_nipype.io import InputError, read_curve_tsv
from ctp_nipype.perfusion.timing import (
    TimingError,
    aif_truncation_warning,
    check_timing_units,
    frame_times_from_sources,
)
from ctp_nipype.sims.dataset import write_phantom_dataset
from ctp_nipype.sims.phantom import make_phantom

FAST = ["--methods", "ssvd", "--no-guided-filter"]


@pytest.fixture(scope="module")
def small():
    return make_phantom(size="small", seed=0, noise_sd_hu=0)


def _dataset(root, subjects=2):
    write_phantom_dataset(root, subjects=subjects, size="small", noise_sd_hu=0)
    return root


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


def _perf(out, sub):
    return out / f"sub-{sub}" / "ses-01" / "perf"


# --- the timing rules (science layer) -------------------------------------------------------------


def test_milliseconds_are_refused_with_the_fix_for_each_source():
    for sidecar, fix in (({"RepetitionTime": 1500}, "RepetitionTime in seconds (1.5)"),
                         ({"FrameTimesStart": [1500.0 * i for i in range(40)]}, "FrameTimesStart by 1000")):
        with pytest.raises(TimingError, match="look like milliseconds") as err:
            frame_times_from_sources(40, sidecar=sidecar)
        assert fix in str(err.value)
    with pytest.raises(TimingError, match=r"set_xyzt_units\(t='msec'\)"):
        frame_times_from_sources(40, pixdim4=1500.0, time_unit="sec")
    # the same values in the unit the header declares are fine: 1500 ms = 1.5 s
    assert frame_times_from_sources(40, pixdim4=1500.0, time_unit="msec").frame_times[1] == pytest.approx(1.5)


def test_long_frames_need_the_flag_and_the_flag_accepts_them():
    with pytest.raises(TimingError, match="--allow-long-frames"):
        frame_times_from_sources(40, sidecar={"RepetitionTime": 20.0})  # 13 minutes
    times = frame_times_from_sources(40, sidecar={"RepetitionTime": 20.0}, allow_long_frames=True).frame_times
    assert times[-1] == pytest.approx(780.0)


def test_one_corrupt_frame_time_is_named():
    times = [1.2 * i for i in range(49)] + [6000.0]
    with pytest.raises(TimingError, match=r"frame 49 at 6000 s follows frame 48 at 57.6 s"):
        check_timing_units(times, "FrameTimesStart")


def test_a_frame_interval_agreeing_with_the_file_is_accepted_and_a_contradicting_one_is_not():
    assert frame_times_from_sources(10, sidecar={"RepetitionTime": 1.5}, frame_interval=1.5).frame_times[1] == 1.5
    with pytest.raises(TimingError, match="contradicts"):
        frame_times_from_sources(10, sidecar={"RepetitionTime": 1.5}, frame_interval=1.0)


def test_truncation_warning_fires_only_for_a_cut_bolus():
    t = np.arange(0, 40, 1.0)
    full = 40 + 300 * np.exp(-0.5 * ((t - 12) / 3) ** 2)
    assert aif_truncation_warning(full, t) is None
    rising = 40 + 300 * np.exp(-0.5 * ((t - 45) / 5) ** 2)
    assert "still rises" in aif_truncation_warning(rising, t)
    cut = 40 + 300 * np.exp(-0.5 * ((t - 33) / 4) ** 2)  # peak at 33 s, the last frame (39 s) at 32% of it
    assert aif_truncation_warning(cut, t, fraction=0.3) is not None and aif_truncation_warning(cut, t) is None


def test_aif_tsv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "aif.tsv"
    path.write_bytes("aif\n1\n2\n3\n".encode("utf-8-sig"))  # what a spreadsheet saves
    values, _ = read_curve_tsv(path, "aif", 3)
    assert values.tolist() == [1.0, 2.0, 3.0]


# --- the work directory and locks -------------------------------------------------------------------


def test_default_work_dir_is_private_and_under_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, kept = default_work_dir(tmp_path / "ds", tmp_path / "out")
    assert kept and folder.is_relative_to(tmp_path / "cache")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert default_work_dir(tmp_path / "ds", tmp_path / "out")[0] == folder  # a rerun resumes from it
    assert default_work_dir(tmp_path / "ds", tmp_path / "other")[0] != folder


def test_work_dir_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("only root can give a folder to another user")
    folder = tmp_path / "planted"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(InputError, match=r"belongs to another user \(uid 65534"):
        private_dir(folder)


def test_a_second_run_on_the_same_output_folder_stops_with_one_line(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", subjects=1)
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out, "output folder", "ctp-bids-app"):  # the first run, still running
        code = bids_app.main([str(root), str(out), "participant", "-w", str(tmp_path / "w"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "Another run is using the output folder" in err[0] and f"pid {os.getpid()}" in err[0]
    assert not list(out.rglob("*_desc-*"))


# --- one scan's failure, a full disk ------------------------------------------------------------------


@pytest.mark.parametrize("nprocs", ["1", "2"])
def test_one_bad_scan_never_stops_the_others(tmp_path, capsys, monkeypatch, nprocs):
    root = _dataset(tmp_path / "ds")
    _truncate(root / "sub-02" / "ses-01" / "sub-02_ses-01_ctp.nii.gz")
    out = tmp_path / "out"
    code = bids_app.main([str(root), str(out), "participant", "-w", str(tmp_path / "w"), *FAST, "--nprocs", nprocs])
    captured = capsys.readouterr()
    assert code == 2
    assert (_perf(out, "01") / "sub-01_ses-01_desc-ssvd_cbf.nii.gz").is_file()
    assert not list(_perf(out, "01").glob("*_FAILED.txt")) and not list(_perf(out, "01").glob("*_UNFINISHED.txt"))
    failed = _perf(out, "02") / "sub-02_ses-01_FAILED.txt"
    assert "cannot be read as NIfTI" in failed.read_text()
    assert "1 of 2 scan(s) failed" in captured.out and "failed: sub-02_ses-01:" in captured.out
    assert captured.err.count("\n") == 1 and "sub-02_ses-01" in captured.err
    # the group level with a relative output folder
    monkeypatch.chdir(tmp_path)
    assert bids_app.main([str(root), "out", "group", "--methods", "ssvd"]) == 0
    assert "warning: sub-02_ses-01: its participant-level run failed" in capsys.readouterr().out


def test_a_full_disk_leaves_the_scan_marked_failed(tmp_path, capsys, monkeypatch):
    from ctp_nipype.interfaces import bids as sink_module

    root = _dataset(tmp_path / "ds", subjects=1)
    out = tmp_path / "out"
    real_copy = sink_module.copy_atomic

    def copy_or_full(source, destination):
        if "_cbv" in Path(destination).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(destination))
        return real_copy(source, destination)

    monkeypatch.setattr(sink_module, "copy_atomic", copy_or_full)  # the sinks run in this process (Linear)
    code = bids_app.main([str(root), str(out), "participant", "-w", str(tmp_path / "w"), *FAST, "--nprocs", "1"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    note = _perf(out, "01") / "sub-01_ses-01_FAILED.txt"
    assert "No space left on device" in note.read_text()
    assert not (_perf(out, "01") / "sub-01_ses-01_UNFINISHED.txt").exists()
    # the rerun with space succeeds, from the cache, and removes the note
    monkeypatch.setattr(sink_module, "copy_atomic", real_copy)
    assert bids_app.main([str(root), str(out), "participant", "-w", str(tmp_path / "w"), *FAST, "--nprocs", "1"]) == 0
    assert not note.exists() and (_perf(out, "01") / "sub-01_ses-01_desc-ssvd_cbv.nii.gz").is_file()


def test_a_file_name_with_spaces_and_brackets(tmp_path, small, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    scan = inp / "patient 1 (copy)_ctp.nii.gz"
    img = nb.Nifti1Image(small.hu, small.affine)
    img.header.set_xyzt_units("mm", "sec")
    nb.save(img, str(scan))
    (inp / "patient 1 (copy)_ctp.json").write_text(json.dumps({"FrameTimesStart": small.frame_times.tolist()}))
    out = tmp_path / "out dir"
    assert perfusion_cli.main([str(scan), str(out), "--method", "ssvd", "--no-guided-filter"]) == 0, \
        capsys.readouterr().err
    assert (out / "patient 1 (copy)_desc-ssvd_cbf.nii.gz").is_file()  # the user's name kept for the outputs
    assert not list(out.glob("*_UNFINISHED.txt"))


# --- Ctrl-C ---------------------------------------------------------------------------------------------


def _children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _interrupt_not_ignored():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_ctrl_c_with_two_processes_stops_every_worker_and_prints_one_line(tmp_path):
    root = _dataset(tmp_path / "ds")
    # the app as a terminal's foreground job starts it: Ctrl-C not ignored. A test run started in the background
    # of a shell script (`pytest ... &`, `nohup make test &`) ignores SIGINT, and a child inherits that, so the
    # app would never see the signal and finish with 0 (2026-12-07: two runs of .ci/run started so failed here)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctp_nipype.cli.bids_app", str(root), str(tmp_path / "out"), "participant",
         "-w", str(tmp_path / "w"), "--methods", "ssvd", "osvd", "--nprocs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_interrupt_not_ignored,
    )
    workers = set()
    for line in proc.stdout:  # wait for the first finished step: the workers are up
        workers.update(_children(proc.pid))
        if line.startswith("[done"):
            break
    workers.update(_children(proc.pid))
    assert proc.poll() is None, "the run ended before Ctrl-C was sent"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err
    time.sleep(0.5)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not alive, f"workers still running: {alive}"
    assert list((tmp_path / "out").rglob("*_UNFINISHED.txt"))  # the unfinished scans say so


def test_a_scan_cut_in_the_first_pass_warns_in_the_sidecar_and_the_summary(tmp_path, small, capsys):
    assert aif_truncation_warning(small.aif, small.frame_times) is None  # the whole phantom: no warning
    inp = tmp_path / "in"
    inp.mkdir()
    img = nb.Nifti1Image(small.hu[..., :14], small.affine)  # the AIF peaks at 10 s; the scan stops at 13 s
    img.header.set_xyzt_units("mm", "sec")
    nb.save(img, str(inp / "cut_ctp.nii.gz"))
    (inp / "cut_ctp.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    out = tmp_path / "out"
    assert perfusion_cli.main([str(inp / "cut_ctp.nii.gz"), str(out), "--method", "ssvd", "--no-guided-filter"]) == 0
    sidecar = json.loads((out / "cut_desc-global_aif.json").read_text())
    assert "before the AIF's first pass is over" in sidecar["AIFTruncationWarning"]
    assert "warning: cut_desc-global_aif.json: The scan ends before the AIF's first pass" in capsys.readouterr().out


def test_allow_long_frames_runs_a_slow_series_through_every_step(tmp_path, small, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    img = nb.Nifti1Image(small.hu[..., :40], small.affine)
    img.header.set_xyzt_units("mm", "sec")
    nb.save(img, str(inp / "slow_ctp.nii.gz"))
    (inp / "slow_ctp.json").write_text(json.dumps({"RepetitionTime": 12.0}))  # 468 s, 12 s per frame
    argv = [str(inp / "slow_ctp.nii.gz"), str(tmp_path / "out"), "--method", "ssvd", "--no-guided-filter"]
    assert perfusion_cli.main(argv) == 2
    assert "--allow-long-frames" in capsys.readouterr().err
    assert perfusion_cli.main(argv + ["--allow-long-frames"]) == 0, capsys.readouterr().err
    times, _ = read_curve_tsv(tmp_path / "out" / "slow_desc-global_aif.tsv", "time")
    assert times[1] - times[0] == pytest.approx(12.0) and times[-1] == pytest.approx(468.0)


def test_two_runs_at_once_on_the_same_folders(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", subjects=1)
    argv = [str(root), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w"), *FAST, "--nprocs", "1"]
    first = subprocess.Popen([sys.executable, "-m", "ctp_nipype.cli.bids_app", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    for line in first.stdout:  # the first run is under way
        if line.startswith("[done"):
            break
    assert bids_app.main(argv) == 2  # the second one, meanwhile
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"Another run is using the work folder (-w) {tmp_path / 'w'}" in err[0], err
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert (_perf(tmp_path / "out", "01") / "sub-01_ses-01_desc-ssvd_cbf.nii.gz").is_file()


def test_progress_counts_slab_jobs_and_estimates_the_time_left():
    """The [progress] line's total grows with each MapNode job (_ssvd0, ...) and its estimate is the mean step time."""
    import io
    from types import SimpleNamespace

    from ctp_nipype.cli._run import ProgressPrinter

    stream = io.StringIO()
    progress = ProgressPrinter(stream, total_steps=4)
    for name in ("wf.load", "_ssvd0", "_ssvd1"):
        progress(SimpleNamespace(fullname=name, result=None), "start")
    assert progress.total == 6
    for name in ("wf.load", "_ssvd0", "_ssvd1"):
        progress(SimpleNamespace(fullname=name, result=None), "end")
    progress._clock -= 30.0  # 30 s for 3 steps: 10 s each, 3 left
    assert progress.estimate() == "3/6 steps, 00:30 elapsed, about 00:30 left"
    assert stream.getvalue().count("[done") == 3


def test_the_scheduler_looks_at_its_jobs_often_on_one_machine_and_as_asked(tmp_path):
    """Nipype waits poll_sleep_duration between looks at its jobs (2 s by default, read from its config only): a
    local run polls every 0.05 s, and --plugin-args poll_sleep_duration=... reaches the config."""
    from nipype import Node, Workflow, config
    from nipype.interfaces.utility import Function

    from ctp_nipype.cli._run import POLL_SECONDS, run_workflow

    def negate(x):
        return -x

    def workflow(name):
        wf = Workflow(name, base_dir=str(tmp_path))
        wf.add_nodes([Node(Function(input_names=["x"], output_names=["y"], function=negate), name="a")])
        wf.get_node("a").inputs.x = -1
        return wf

    run_workflow(workflow("default"), "MultiProc", nprocs=2)
    assert float(config.get("execution", "poll_sleep_duration")) == POLL_SECONDS["MultiProc"] == 0.05
    run_workflow(workflow("asked"), "MultiProc", nprocs=2, plugin_args={"poll_sleep_duration": 0.5})
    assert float(config.get("execution", "poll_sleep_duration")) == 0.5


def test_parallel_steps_share_the_cores_out_among_their_blas_threads(tmp_path):
    """With MultiProc each worker's BLAS uses its share of the cores (worker_threads), not one thread per core."""
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from ctp_nipype.cli._run import run_workflow, worker_threads

    def blas_threads(x):
        from threadpoolctl import threadpool_info

        import numpy as np

        np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
        return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")

    wf = Workflow("threads", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["threads"], function=blas_threads), name="blas")
    node.inputs.x = 0
    wf.add_nodes([node])
    run_workflow(wf, "MultiProc", nprocs=2)
    result = next(tmp_path.rglob("result_blas.pklz"))
    from nipype.utils.filemanip import loadpkl

    assert loadpkl(result).outputs.threads == worker_threads(2)
    assert worker_threads(2, 2) == 1 and worker_threads(2, 16) == 8 and worker_threads(3, 2) == 1
