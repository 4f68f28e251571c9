"""From parsed options to a finished run: ``build_workflow`` and the per-scan runner (fMRIPrep's
``cli/workflow.py`` style), shared by ``ctp-perfusion`` and ``ctp-bids-app``.

Every scan is one sub-workflow of :func:`ctp_nipype.workflows.base.init_ctp_wf`, all inside one
Nipype workflow run by one plugin, so the per-scan loop is the workflow's, and Nipype schedules
the steps of all scans together. Scans are isolated from each other:

* a step that fails stops only the steps that need its output (Nipype's
  ``stop_on_first_crash`` is off), never another scan's, whatever ``--nprocs``;
* a scan whose header or timing is refused before the run (:func:`precheck_scans`) is left out
  of the workflow and reported, and the others run;
* each scan's output folder holds ``<prefix>_UNFINISHED.txt`` while it runs, which becomes
  ``<prefix>_FAILED.txt`` (with the reason) when one of its steps fails, and disappears when its
  last step succeeded; a folder without such a note is a complete run;
* the summary lists every failed scan with its reason, and the command exits non-zero when any
  scan failed.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._run import WorkflowError, crash_line, run_workflow, summarise_outputs
from ._workdir import locked_folders, mark_failed, mark_finished, mark_unfinished
from .parser import method_options


@dataclass
class ScanJob:
    """One scan to process: where it is, its outputs' prefix and folder, and optional user inputs."""

    in_file: Path
    prefix: str
    subdir: str = ""
    inputs: dict = field(default_factory=dict)  # inputnode fields: aif_file, vof_file, brain_mask

    @property
    def node_name(self):
        return node_name(f"scan_{self.prefix}")


def node_name(text):
    """A valid Nipype node name made from any text (a file name may hold spaces, brackets, dots, dashes).

    >>> node_name("scan_patient 1 (copy).v2-a")
    'scan_patient_1__copy__v2_a'
    """
    name = re.sub(r"\W", "_", str(text), flags=re.ASCII)
    return name if name[:1].isalpha() else f"n_{name}"


def build_workflow(args, output_dir, job, methods):
    """``init_ctp_wf`` for one scan with the shared options, written once for both commands."""
    from ..workflows.base import init_ctp_wf

    workflow = init_ctp_wf(
        str(Path(output_dir).resolve()),
        subdir=job.subdir,
        methods=methods,
        motion_correction=args.motion_correction,
        guided_filter=not args.no_guided_filter,
        partial_volume_correction=not args.no_partial_volume_correction,
        guided_filter_radius_mm=args.guided_filter_radius_mm,
        device=args.device,
        weights=str(args.weights.resolve()) if args.weights else None,
        frame_interval=args.frame_interval,
        allow_long_frames=args.allow_long_frames,
        method_options=method_options(args),
        n_slabs=getattr(args, "slabs", 0),
        n_procs=args.nprocs,
        working_voxel_mm=getattr(args, "working_voxel_mm", None),
        name=job.node_name,
    )
    workflow.inputs.inputnode.in_file = str(Path(job.in_file).resolve())
    workflow.inputs.inputnode.prefix = job.prefix
    for name, path in job.inputs.items():
        if path is not None:
            setattr(workflow.inputs.inputnode, name, str(Path(path).resolve()))
    return workflow


def precheck_scans(jobs, args):
    """Read every scan's header and timing (not its data) before anything runs.

    Returns ``(good jobs, {prefix: reason})``: a scan whose header cannot be read or whose timing
    breaks the rules (:mod:`ctp_nipype.perfusion.timing`) is refused here, and the others go on.
    A scan that git-annex has not fetched (a broken symbolic link) is refused here as well.
    """
    from ..io import read_timing

    good, refused = [], {}
    for job in jobs:
        path = Path(job.in_file)
        try:
            if path.is_symlink() and not path.exists():
                target = path.readlink()
                hint = (" (a git-annex file whose content is not here: `datalad get` or `git annex get` it)"
                        if ".git/annex/objects" in str(target) else "")
                raise FileNotFoundError(
                    f"The CTP scan {path} is a broken symbolic link to {target}{hint}."
                )
            read_timing(path, frame_interval=args.frame_interval, allow_long_frames=args.allow_long_frames)
        except (ValueError, OSError) as err:
            from ._errors import one_line

            refused[job.prefix] = one_line(err)
            continue
        good.append(job)
    return good, refused


def run_scans(prog, jobs, args, output_dir, work_dir, methods, crashdump_dir, refused=None):
    """Run every scan in one Nipype workflow, mark each scan's folder, and report.

    Parameters
    ----------
    prog : str
        The command's name (for the marks and the error lines).
    jobs : list of ScanJob
    args : argparse.Namespace
        The shared options (:mod:`ctp_nipype.cli.parser`).
    output_dir, work_dir : Path
        Both are locked for the run (a second run on either stops at once).
    methods : sequence of str
    crashdump_dir : Path
    refused : dict, optional
        ``{prefix: reason}`` of scans refused before the run (reported with the failures).

    Returns
    -------
    (dict, ProgressPrinter or None, float)
        ``{prefix: reason}`` of every failed or refused scan, the progress of the run and its start time.
    """
    from nipype.pipeline import engine as pe

    failures = dict(refused or {})
    for prefix, reason in failures.items():
        folder = Path(output_dir) / next((j.subdir for j in jobs if j.prefix == prefix), "")
        _try_mark(mark_failed, folder, prefix, prog, reason)
    start = time.time()
    progress = None
    with locked_folders(prog, [(work_dir, "work folder (-w)"), (output_dir, "output folder")]):
        workflow = pe.Workflow(name="ctp_nipype_wf", base_dir=str(Path(work_dir).resolve()))
        workflow.config["execution"] = {"remove_unnecessary_outputs": False}
        by_name = {}
        for job in jobs:
            workflow.add_nodes([build_workflow(args, output_dir, job, methods)])
            by_name[job.node_name] = job
            mark_unfinished(Path(output_dir) / job.subdir, job.prefix, prog)
        if jobs:
            try:
                progress, crashes = run_workflow(workflow, args.plugin, args.nprocs, args.plugin_args_dict,
                                                 crashdump_dir=crashdump_dir, debug=args.debug)
            except WorkflowError as err:  # not one step's failure: every scan of the run is in doubt
                for job in jobs:
                    _try_mark(mark_failed, Path(output_dir) / job.subdir, job.prefix, prog, str(err))
                raise
            failed_nodes = set(progress.failed)
            for job in jobs:
                mine = [c for c in crashes if f".{job.node_name}." in f".{c[0]}."]
                if mine:
                    failures[job.prefix] = crash_line(mine)
                elif any(f".{job.node_name}." in f".{n}." for n in failed_nodes):
                    failures[job.prefix] = "a step failed (no crash report; run again with --debug)"
            for job in jobs:
                folder = Path(output_dir) / job.subdir
                if job.prefix in failures:
                    _try_mark(mark_failed, folder, job.prefix, prog, failures[job.prefix])
                else:
                    mark_finished(folder, job.prefix)
    return failures, progress, start


def _try_mark(mark, folder, prefix, prog, reason):
    """Write a FAILED note; on a full disk the UNFINISHED note written at the start stays instead."""
    try:
        mark(folder, prefix, prog, reason)
    except OSError:
        pass


class ScansFailed(ValueError):
    """Some scans failed or were refused; the message holds one reason per scan, on one line."""


def report(failures, progress, start, output_dir, n_scans, stream=None):
    """The summary after a run: time, files written, warnings, and every failed scan with its reason.

    Raises :class:`ScansFailed` (one line for the error output) when any scan failed.
    """
    stream = stream or sys.stdout
    steps = f" ({progress.finished} steps run)" if progress is not None else ""
    print(f"\nFinished in {time.time() - start:.0f} s{steps}.", file=stream)
    for line in summarise_outputs(output_dir, start):
        print(line, file=stream)
    if not failures:
        return
    print(f"{len(failures)} of {n_scans} scan(s) failed (their folders hold a _FAILED.txt note):", file=stream)
    for prefix, reason in failures.items():
        print(f"  failed: {prefix}: {reason}", file=stream)
    if len(failures) == 1:
        prefix, reason = next(iter(failures.items()))
        raise ScansFailed(f"{prefix}: {reason}" if n_scans > 1 else reason)
    raise ScansFailed(f"{len(failures)} of {n_scans} scans failed: "
                      + "; ".join(f"{prefix}: {reason}" for prefix, reason in failures.items()))
