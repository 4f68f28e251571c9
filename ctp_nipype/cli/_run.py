"""Running a workflow from a command line: plugins, progress lines, the final summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from ..bids import derivative_name, parse_derivative_name
from .parser import PLUGINS


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
    """Nipype ``status_callback``: one line per finished step, with its time, above a progress bar.

    The progress counts the steps, slab jobs included (a MapNode's jobs are added to the total as they
    appear), and estimates the time left from the mean time per step so far: on a terminal a tqdm bar
    under the step lines; in a log file (cluster job, CI) a ``[progress]`` line at most every 30 s.

    Nipype's Linear plugin also reports ``end`` for the steps it skips because an
    upstream step failed; those were never started, have no result, and are counted
    in ``skipped``, not printed.
    """

    def __init__(self, stream=None, total_steps=None):
        import sys

        self.stream = stream or sys.stdout
        self.started = {}
        self.finished = 0
        self.skipped = 0
        self.failed = []
        self.total = int(total_steps or 0)
        self.bar = None
        self._clock = time.monotonic()
        self._last_estimate = self._clock
        if self.total and self.stream.isatty() and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="steps", unit="step", leave=False,
                            bar_format="{desc}: {n}/{total} {bar} {elapsed} elapsed, about {remaining} left")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def estimate(self):
        """``'12/40 steps, 1:05 elapsed, about 2:31 left'`` (from the mean time per step so far)."""
        from tqdm import tqdm

        elapsed = time.monotonic() - self._clock
        done = self.finished + self.skipped
        left = (self.total - done) * elapsed / done if done else float("nan")
        left_text = tqdm.format_interval(left) if left == left else "?"
        return f"{done}/{self.total} steps, {tqdm.format_interval(elapsed)} elapsed, about {left_text} left"

    def _line(self, text):
        if self.bar is not None:  # a terminal: the line above the bar
            self.bar.write(text, file=self.stream)
            return
        print(text, file=self.stream, flush=True)
        now = time.monotonic()
        if self.total and now - self._last_estimate >= 30.0:  # a log file: the estimate every 30 s or more
            self._last_estimate = now
            print(f"[progress] {self.estimate()}", file=self.stream, flush=True)

    def __deepcopy__(self, memo):
        # Nipype deep-copies a MapNode, plugin arguments and all, before running it with MultiProc: the
        # callback stays this one (a stream cannot be copied)
        return self

    def __getstate__(self):
        # ... and pickles the MapNode's jobs for its worker processes: a copy there writes to its own stdout
        return {**self.__dict__, "stream": None, "bar": None}

    def __setstate__(self, state):
        import sys

        self.__dict__.update(state)
        self.stream = self.stream or sys.stdout

    def __call__(self, node, status):
        name = node.fullname
        if status == "start":
            self.started[name] = time.monotonic()
            if self.total and name.startswith("_"):  # a MapNode's job (_ssvd3): one more step
                self.total += 1
                if self.bar is not None:
                    self.bar.total = self.total
            return
        if name not in self.started and status == "end":
            self.skipped += 1
            return
        if self.bar is not None:
            self.bar.update(1)
        elapsed = time.monotonic() - self.started.pop(name, time.monotonic())
        try:
            runtime = getattr(node.result, "runtime", None)
        except Exception:  # noqa: BLE001 - no result file (failed or cleaned up): the plugin's time
            runtime = None
        if getattr(runtime, "duration", None) is not None:
            elapsed = runtime.duration  # the node's own time, not the plugin's queueing
        if status == "end":
            self.finished += 1
            if name.split(".")[-1] in ("inputnode", "outputnode") or "merge" in name or "collect" in name:
                return
            self._line(f"[done {elapsed:6.1f} s] {name}")
        elif status == "exception":
            self.failed.append(name)
            self._line(f"[FAILED {elapsed:5.1f} s] {name}")


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
        errors = [line.strip() for line in text
                  if line.strip(" ^~\t") and not line.startswith(("Node", "Working", "File"))]
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


def _ignore_interrupt(cwd, threads=None):
    """A MultiProc worker's start: Ctrl-C is the parent's to handle (it stops the workers); with ``threads``,
    the worker's BLAS and OpenMP (numpy, scipy, torch) use at most that many threads (:func:`worker_threads`)."""
    import signal

    from nipype.pipeline.plugins.multiproc import process_initializer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    process_initializer(cwd)
    if threads:
        from threadpoolctl import threadpool_limits

        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # torch, when it loads
            os.environ[name] = str(threads)
        threadpool_limits(threads)  # the libraries already loaded (the worker is forked from the parent)


def worker_threads(n_procs, n_cpus=None):
    """Threads per MultiProc worker: the machine's cores shared out, at least one.

    OpenBLAS (numpy's) and OpenMP start one thread per core in every process; with as many workers as cores
    each step's threads then fight the others' (on 2 cores, the four oSVD slab jobs of a clinical scan took
    24.1 s, their wall times summed, with two threads each and 12.8 s with one).

    >>> worker_threads(2, 2), worker_threads(2, 16), worker_threads(8, 2)
    (1, 8, 1)
    """
    if n_cpus is None:
        n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(n_cpus) // max(1, int(n_procs)))


class _RareCollect:
    """Stands in for the ``gc`` module in Nipype's MultiProc, whose scheduler runs a full ``gc.collect()``
    before each look for jobs to submit: 70 ms each on a clinical scan's workflow, 30 s of the main
    process's CPU over one 74 s run when it looks every 0.05 s (:data:`POLL_SECONDS`), a core taken from the
    steps. Here it collects at most every ``every_s`` seconds (Python's own collector runs as always)."""

    def __init__(self, every_s=30.0):
        self.every_s = float(every_s)
        self._last = -float("inf")

    def collect(self, *args, **kwargs):
        import gc

        now = time.monotonic()
        if now - self._last < self.every_s:
            return 0
        self._last = now
        return gc.collect(*args, **kwargs)


def _multiproc_plugin(plugin_args):
    """Nipype's MultiProc whose workers ignore Ctrl-C, so that an interrupt prints one line, not one
    traceback per worker (:func:`run_workflow` ends the workers itself), and whose scheduler does not run a
    full garbage collection at every look for jobs (:class:`_RareCollect`)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from nipype.pipeline.plugins import multiproc

    class MultiProcPlugin(multiproc.MultiProcPlugin):  # Nipype names a plugin object by its class name
        def __init__(self, plugin_args=None):
            super().__init__(plugin_args=plugin_args)
            self.pool.shutdown(wait=False)  # no worker started yet: replace the pool
            self.pool = ProcessPoolExecutor(max_workers=self.processors, initializer=_ignore_interrupt,
                                            initargs=(self._cwd, worker_threads(self.processors)),
                                            mp_context=mp.get_context(self.plugin_args.get("mp_context")))
            self._collector = _RareCollect()

        def _send_procs_to_workers(self, *args, **kwargs):
            saved, multiproc.gc = multiproc.gc, self._collector
            try:
                return super()._send_procs_to_workers(*args, **kwargs)
            finally:
                multiproc.gc = saved

    return MultiProcPlugin(plugin_args=plugin_args)


def _stop_workers(runner):
    """End a MultiProc pool's worker processes now (after Ctrl-C)."""
    pool = getattr(runner, "pool", None)
    if pool is None:
        return
    # the jobs still queued or running end with BrokenProcessPool, which Nipype's callback re-raises and
    # concurrent.futures logs with a traceback per job: the user pressed Ctrl-C and gets one line
    logging.getLogger("concurrent.futures").disabled = True
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()
    with contextlib.suppress(Exception):
        pool.shutdown(wait=True, cancel_futures=True)


#: seconds between the scheduler's looks at its running jobs, by plugin (``--plugin-args poll_sleep_duration=``)
POLL_SECONDS = {"MultiProc": 0.05, "Linear": 0.05, "SLURM": 2.0}


def check_plugin_args(plugin, plugin_args):
    """The plugin's arguments of the right types: ``n_procs``, ``memory_gb``, ``max_jobs`` are numbers.

    >>> check_plugin_args("MultiProc", {"n_procs": "abc"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctp_nipype.io.InputError: --plugin-args n_procs=...abc... is not a number; give a whole number of processes, e.g. n_procs=4.
    """
    from ..io import InputError

    if plugin not in PLUGINS:
        raise InputError(f"Unknown plugin {plugin!r}; choose one of {', '.join(PLUGINS)}.")
    numbers = {"n_procs": (int, 1, "a whole number of processes, e.g. n_procs=4"),
               "max_jobs": (int, 1, "a whole number of jobs, e.g. max_jobs=50"),
               "memory_gb": (float, 0, "a memory size in GB, e.g. memory_gb=16"),
               "poll_sleep_duration": (float, 0, "seconds, e.g. poll_sleep_duration=5")}
    for key, (kind, lowest, example) in numbers.items():
        if key not in plugin_args:
            continue
        value = plugin_args[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise InputError(f"--plugin-args {key}={value!r} is not a number; give {example}.")
        if not value > lowest - (kind is int):
            raise InputError(f"--plugin-args {key}={value!r} is out of range; give {example}.")
    return plugin_args


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after every worker was stopped."""


def run_workflow(workflow, plugin="MultiProc", nprocs=1, plugin_args=None, crashdump_dir=None, debug=False):
    """Run with a Nipype plugin, printing one line per finished step.

    A failed step does not stop the others (Nipype's ``stop_on_first_crash`` is off):
    the steps that do not depend on it still run. Returns ``(progress, crashes)``:
    the :class:`ProgressPrinter` and ``[(node, message, crash file)]`` of the steps that
    failed (Nipype's own traceback only with ``debug``). A failure no crash report
    explains raises :class:`WorkflowError`. Ctrl-C stops every worker process and raises
    :class:`Interrupted`.
    """
    from nipype import config
    from nipype import logging as nipype_logging

    args = check_plugin_args(plugin, dict(plugin_args or {}))
    config.set("execution", "stop_on_first_crash", "false")
    config.set("execution", "crashfile_format", "txt")
    if crashdump_dir:
        config.set("execution", "crashdump_dir", str(crashdump_dir))
        workflow.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    config.set("monitoring", "enabled", "false")
    # Nipype's scheduler sleeps this long between looks at its jobs (2 s by default, and it reads it from its
    # config, not from the plugin's arguments): on one machine a step then waits up to 2 s for the one before
    # it, about 30 s over a scan's chain of steps; a cluster's queue is asked less often
    config.set("execution", "poll_sleep_duration",
               str(args.pop("poll_sleep_duration", POLL_SECONDS.get(plugin, 2.0))))
    quiet = logging.WARNING if debug else logging.CRITICAL
    for logger in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        nipype_logging.getLogger(logger).setLevel(quiet)
    if plugin == "SLURM":
        _check_slurm()
    progress = ProgressPrinter(total_steps=len(workflow._get_all_nodes()))
    args.setdefault("status_callback", progress)
    if plugin == "MultiProc":
        args.setdefault("n_procs", max(1, int(nprocs)))
        args.setdefault("raise_insufficient", False)
    if plugin == "MultiProc" and args["n_procs"] == 1:
        plugin = "Linear"
        args.pop("n_procs")
        args.pop("raise_insufficient")
    runner = _multiproc_plugin(args) if plugin == "MultiProc" else plugin
    started = time.time() - 1
    try:
        workflow.run(plugin=runner, plugin_args=None if plugin == "MultiProc" else args)
        progress.close()
    except KeyboardInterrupt:
        progress.close()
        _stop_workers(runner)
        raise Interrupted() from None
    except Exception as err:  # nipype raises RuntimeError or the node's own error
        progress.close()
        if debug:
            raise
        crashes = _crash_summary(crashdump_dir, started) if crashdump_dir else []
        if not crashes:
            raise WorkflowError(f"the workflow failed: {err}") from None
        return progress, crashes
    return progress, []


def crash_line(crashes):
    """One line for the crashes of one scan: its first failed step, its error and the crash report."""
    node, message, path = crashes[0]
    more = f" (and {len(crashes) - 1} more failed steps)" if len(crashes) > 1 else ""
    return f"step '{node}' failed: {message.rstrip('.')}{more}. Crash report: {path}"


def _read_sidecar_key(path, key):
    try:
        return json.loads(Path(path).read_text()).get(key)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def summarise_outputs(output_dir, since):
    """Lines describing the derivatives written since a time stamp, and warnings from sidecars."""
    output_dir = Path(output_dir)
    written = [p for p in output_dir.rglob("*") if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime >= since]
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
        for key in ("HeadMotionWarning", "AIFTruncationWarning"):
            warning = _read_sidecar_key(side, key)
            if warning:
                lines.append(f"warning: {side.name}: {warning}")
    reports = sorted(p for p in written if p.suffix == ".html")
    for report in reports:
        lines.append(f"report: {report}")
    return lines
