"""Running a workflow from a command line: plugins, progress lines, the final summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

PLUGINS = ("Linear", "MultiProc", "SLURM")


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


def run_workflow(workflow, plugin="MultiProc", nprocs=1, plugin_args=None, crashdump_dir=None):
    """Run with a Nipype plugin, printing progress; returns the ProgressPrinter."""
    from nipype import config, logging as nipype_logging

    if plugin not in PLUGINS:
        raise ValueError(f"Unknown plugin {plugin!r}; choose one of {', '.join(PLUGINS)}.")
    config.set("execution", "stop_on_first_crash", "false")
    config.set("execution", "crashfile_format", "txt")
    if crashdump_dir:
        config.set("execution", "crashdump_dir", str(crashdump_dir))
        workflow.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    config.set("monitoring", "enabled", "false")
    nipype_logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    progress = ProgressPrinter()
    args = dict(plugin_args or {})
    if plugin in ("Linear", "MultiProc"):
        args.setdefault("status_callback", progress)
    if plugin == "MultiProc":
        args.setdefault("n_procs", max(1, int(nprocs)))
        args.setdefault("raise_insufficient", False)
    if plugin == "MultiProc" and args["n_procs"] == 1:
        plugin = "Linear"
        args.pop("n_procs")
        args.pop("raise_insufficient")
    try:
        workflow.run(plugin=plugin, plugin_args=args)
    except RuntimeError as err:
        crashes = sorted(Path(crashdump_dir or ".").glob("crash-*.txt")) if crashdump_dir else []
        hint = f" Crash reports: {crashes[-1].parent}" if crashes else ""
        raise RuntimeError(f"{err}{hint}") from None
    return progress


def summarise_outputs(output_dir, since):
    """Lines describing the derivatives written since a time stamp, and warnings from sidecars."""
    output_dir = Path(output_dir)
    written = [p for p in output_dir.rglob("*") if p.is_file() and p.stat().st_mtime >= since]
    maps = [p for p in written if p.name.endswith(".nii.gz") and "_desc-" in p.name]
    lines = [f"{len(written)} files written under {output_dir} ({len(maps)} NIfTI maps and masks)."]
    for side in sorted(p for p in written if p.suffix == ".json" and p.name.endswith("_cbf.json")):
        try:
            flagged = json.loads(side.read_text()).get("FlaggedVoxels", 0)
        except (OSError, json.JSONDecodeError):
            continue
        if flagged:
            lines.append(f"warning: {side.name}: {flagged} voxels could not be fitted (set to 0)")
    reports = sorted(p for p in written if p.suffix == ".html")
    for report in reports:
        lines.append(f"report: {report}")
    return lines
