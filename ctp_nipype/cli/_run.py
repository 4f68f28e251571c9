"""Running a workflow from a command line: plugins, progress lines, the final summary."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from ..bids import derivative_name, parse_derivative_name

PLUGINS = ("Linear", "MultiProc", "SLURM")


def positive_float(text):
    """argparse type: a number above 0 (``--guided-filter-radius-mm 2.5``)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_method_options(parser):
    """The SVD thresholds, the constants and the baseline: options shared by ctp-perfusion and ctp-bids-app."""
    from ..perfusion.constants import KAPPA_H, RHO
    from ..perfusion.svd import DEFAULT_OI_THRESHOLD

    parser.add_argument("--threshold", type=float, help="relative SVD threshold (default per method: sSVD 0.2, "
                        "cSVD 0.1; for oSVD the largest rung of its ladder)")
    parser.add_argument("--oi-threshold", type=float, default=DEFAULT_OI_THRESHOLD,
                        help="oSVD's oscillation index target (default %(default)s)")
    parser.add_argument("--kappa-h", type=float, default=KAPPA_H, help="hematocrit factor (default %(default)s)")
    parser.add_argument("--rho", type=float, default=RHO, help="tissue density in g/ml (default %(default)s)")
    parser.add_argument("--baseline-frames", type=int, help="pre-bolus frames (default: detected from the AIF)")


def method_options(args):
    """The ``method_options`` of :func:`ctp_nipype.workflows.base.init_ctp_wf` from the options above."""
    return {
        "threshold": args.threshold,
        "oi_threshold": args.oi_threshold,
        "kappa_h": args.kappa_h,
        "rho": args.rho,
        "n_baseline_frames": args.baseline_frames,
    }


def check_options(args):
    """Numeric options in their valid ranges (each error names the option); options a command lacks are skipped."""
    from ..io import InputError

    checks = (
        ("--threshold", "threshold", lambda v: 0 < v < 1, "a relative threshold strictly between 0 and 1"),
        ("--oi-threshold", "oi_threshold", lambda v: v > 0, "a positive oscillation index"),
        ("--kappa-h", "kappa_h", lambda v: 0 < v <= 1, "a hematocrit factor in (0, 1]"),
        ("--rho", "rho", lambda v: 0 < v < 10, "a tissue density in g/ml (about 1.04)"),
        ("--frame-interval", "frame_interval", lambda v: 0 < v < 3600, "a positive number of seconds"),
        ("--baseline-frames", "baseline_frames", lambda v: v >= 1, "at least 1"),
        ("--nprocs", "nprocs", lambda v: v >= 1, "at least 1"),
    )
    for option, name, valid, expected in checks:
        value = getattr(args, name, None)
        if value is not None and not (value == value and valid(value)):  # value == value: not NaN
            raise InputError(f"{option} {value} is out of range; give {expected}.")


def parse_plugin_args(text):
    """``--plugin-args`` as JSON (``'{"sbatch_args": "-p short"}'``) or ``key=value`` pairs.

    >>> parse_plugin_args('sbatch_args=-p short --mem 4G, max_jobs=10')
    {'sbatch_args': '-p short --mem 4G', 'max_jobs': 10}
    >>> parse_plugin_args('{"n_procs": 2}')
    {'n_procs': 2}
    """
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--plugin-args is not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError("--plugin-args must be a JSON object, e.g. '{\"sbatch_args\": \"-p short\"}'.")
        return value
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--plugin-args item {item.strip()!r} is not key=value.")
        key, value = item.split("=", 1)
        value = value.strip()
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        out[key.strip()] = value
    return out


class ProgressPrinter:
    """Nipype ``status_callback``: one line per finished step, with its time."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stdout
        self.started = {}
        self.finished = 0
        self.failed = []

    def __call__(self, node, status):
        name = node.fullname
        if status == "start":
            self.started[name] = time.monotonic()
            return
        elapsed = time.monotonic() - self.started.pop(name, time.monotonic())
        runtime = getattr(getattr(node, "result", None), "runtime", None)
        if getattr(runtime, "duration", None) is not None:
            elapsed = runtime.duration  # the node's own time, not the plugin's queueing
        if status == "end":
            self.finished += 1
            if name.split(".")[-1] in ("inputnode", "outputnode") or "merge" in name or "collect" in name:
                return
            print(f"[done {elapsed:6.1f} s] {name}", file=self.stream, flush=True)
        elif status == "exception":
            self.failed.append(name)
            print(f"[FAILED {elapsed:5.1f} s] {name}", file=self.stream, flush=True)


class WorkflowError(ValueError):
    """A step of the workflow failed; the message names the step and its error."""


def _crash_summary(crashdump_dir, since):
    """``(node, last line of the traceback, path)`` for each crash file written since ``since``."""
    found = []
    for crash in sorted(Path(crashdump_dir).glob("crash-*.txt")):
        if crash.stat().st_mtime < since:
            continue
        text = crash.read_text(errors="replace").splitlines()
        node = next((line.split(":", 1)[1].strip() for line in text if line.startswith("Node:")), crash.name)
        errors = [line.strip() for line in text if line.strip() and not line.startswith(("Node", "Working", "File"))]
        message = next((line for line in reversed(errors) if "Error" in line or "Exception" in line), errors[-1] if errors else "")
        message = re.sub(r"^(?:\w+\.)+(\w+:)", r"\1", message)  # ctp_nipype.io.InputError: -> InputError:
        found.append((node, message, crash))
    return found


def _check_slurm():
    """SLURM's commands on PATH, and the user name that Nipype's SLURM plugin names jobs after."""
    missing = [tool for tool in ("sbatch", "squeue") if shutil.which(tool) is None]
    if missing:
        raise WorkflowError(
            f"--plugin SLURM submits every step with sbatch and follows it with squeue, but {' and '.join(missing)} "
            "cannot be found on PATH here; run from a SLURM login node or a job (docs/cluster.md), or choose "
            "--plugin MultiProc."
        )
    if not os.environ.get("LOGNAME"):  # unset in many containers; Nipype reads it for every job name
        import getpass

        try:
            os.environ["LOGNAME"] = getpass.getuser()
        except (KeyError, OSError):
            os.environ["LOGNAME"] = "ctp_nipype"


def run_workflow(workflow, plugin="MultiProc", nprocs=1, plugin_args=None, crashdump_dir=None, debug=False):
    """Run with a Nipype plugin, printing one line per finished step; returns the ProgressPrinter.

    A failed step raises :class:`WorkflowError` with the step's name, its error
    message and the crash report's path (Nipype's own traceback only with ``debug``).
    """
    from nipype import config, logging as nipype_logging

    if plugin not in PLUGINS:
        raise ValueError(f"Unknown plugin {plugin!r}; choose one of {', '.join(PLUGINS)}.")
    config.set("execution", "stop_on_first_crash", "false")
    config.set("execution", "crashfile_format", "txt")
    if crashdump_dir:
        config.set("execution", "crashdump_dir", str(crashdump_dir))
        workflow.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    config.set("monitoring", "enabled", "false")
    quiet = logging.WARNING if debug else logging.CRITICAL
    for logger in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        nipype_logging.getLogger(logger).setLevel(quiet)
    if plugin == "SLURM":
        _check_slurm()
    progress = ProgressPrinter()
    args = dict(plugin_args or {})
    args.setdefault("status_callback", progress)
    if plugin == "MultiProc":
        args.setdefault("n_procs", max(1, int(nprocs)))
        args.setdefault("raise_insufficient", False)
    if plugin == "MultiProc" and args["n_procs"] == 1:
        plugin = "Linear"
        args.pop("n_procs")
        args.pop("raise_insufficient")
    started = time.time() - 1
    try:
        workflow.run(plugin=plugin, plugin_args=args)
    except Exception as err:  # nipype raises RuntimeError or the node's own error
        if debug:
            raise
        crashes = _crash_summary(crashdump_dir, started) if crashdump_dir else []
        if not crashes:
            raise WorkflowError(f"the workflow failed: {err}") from None
        node, message, path = crashes[0]
        more = f" (and {len(crashes) - 1} more failed steps)" if len(crashes) > 1 else ""
        raise WorkflowError(f"step '{node}' failed: {message.rstrip('.')}{more}. Crash report: {path}") from None
    return progress


def _read_sidecar_key(path, key):
    try:
        return json.loads(Path(path).read_text()).get(key)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def summarise_outputs(output_dir, since):
    """Lines describing the derivatives written since a time stamp, and warnings from sidecars."""
    output_dir = Path(output_dir)
    written = [p for p in output_dir.rglob("*") if p.is_file() and p.stat().st_mtime >= since]
    maps = [p for p in written if p.name.endswith(".nii.gz") and (parse_derivative_name(p) or {}).get("desc")]
    lines = [f"{len(written)} files written under {output_dir} ({len(maps)} NIfTI maps and masks)."]
    for side in sorted(p for p in written if p.suffix == ".json" and p.name.endswith("_cbf.json")):
        flagged = _read_sidecar_key(side, "FlaggedVoxels")
        if flagged:
            lines.append(
                f"warning: {side.name}: {flagged} voxels flagged by the fit (FlaggedVoxels: unfittable ones are 0; "
                "for oSVD also residues still oscillating at the largest threshold)"
            )
    curves_sidecar = derivative_name("", "aif", desc="global", extension=".json")
    for side in sorted(p for p in written if p.name.endswith(curves_sidecar)):
        correction = _read_sidecar_key(side, "PartialVolumeCorrection")
        reason = correction.get("NotAppliedBecause") if isinstance(correction, dict) else None
        if reason:
            lines.append(f"warning: {side.name}: partial-volume correction of the AIF not applied ({reason})")
        censoring = _read_sidecar_key(side, "AIFFirstPassCensoring")
        if isinstance(censoring, dict) and censoring.get("Warning"):
            lines.append(f"warning: {side.name}: {censoring['Warning']}")
        motion_warning = _read_sidecar_key(side, "HeadMotionWarning")
        if motion_warning:
            lines.append(f"warning: {side.name}: {motion_warning}")
    reports = sorted(p for p in written if p.suffix == ".html")
    for report in reports:
        lines.append(f"report: {report}")
    return lines
