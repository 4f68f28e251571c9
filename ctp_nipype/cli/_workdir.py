"""The folders a run writes to: a private work directory, locks, and marks on unfinished or failed scans.

Nipype keeps its cache as pickles (``result_*.pklz``) and loads them on the
next run: a work directory is trusted like code. So:

* the default work directory lies under the user's own cache folder
  (``platformdirs.user_cache_path('ctp_nipype')``, i.e. ``$XDG_CACHE_HOME`` or
  ``~/.cache``), one per (dataset, output folder), created with mode 0700;
* any work directory, the default or ``-w``, is refused when it belongs to
  another user or is writable by group or others;
* a run holds an exclusive lock (``fcntl.flock`` on ``.ctp_nipype.lock``) on its
  work and output folders: a second run on either stops at once with a line
  saying which folder is in use (it does not wait);
* each scan's folder holds ``<prefix>_UNFINISHED.txt`` from the start of its run
  until its last step succeeds; a failed scan gets ``<prefix>_FAILED.txt`` with the
  reason instead. A folder without either mark is a complete run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

from ..io import InputError

#: the lock file's name inside a work or output folder
LOCK_NAME = ".ctp_nipype.lock"
#: marks in a scan's output folder
UNFINISHED_MARK = "{prefix}_UNFINISHED.txt"
FAILED_MARK = "{prefix}_FAILED.txt"


class BusyError(InputError):
    """Another run holds the lock of a work or output folder."""


def default_work_dir(*key_paths):
    """The default work directory: ``<user cache>/ctp_nipype/work/<hash of key_paths>``.

    Rerunning the same command finds the same folder (and resumes from its cache);
    another dataset or output folder gets another one. When the user's cache folder
    cannot be made private (no writable home, e.g. a container run as a user without
    one), a new private temporary folder is used and the second value is False.

    Returns
    -------
    (Path, bool)
        The folder and whether a rerun will find it again.
    """
    digest = hashlib.sha256("\0".join(str(Path(p).resolve()) for p in key_paths).encode()).hexdigest()[:16]
    try:
        from platformdirs import user_cache_path

        root = user_cache_path("ctp_nipype", appauthor=False)
    except ImportError:  # platformdirs is a dependency; XDG by hand if it is missing
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ctp_nipype"
    folder = root / "work" / digest
    try:
        return private_dir(folder, "default work folder"), True
    except InputError:
        return Path(tempfile.mkdtemp(prefix="ctp_nipype_work_")), False


def private_dir(folder, what="work folder (-w)"):
    """Create ``folder`` (mode 0700) if missing, and refuse one that others control.

    Refused, with the reason: a path that is not a folder, a folder owned by another
    user, or one writable by group or others (anyone who can write there can plant a
    pickle that Nipype loads). Returns the folder as a Path.

    >>> import tempfile, os
    >>> d = private_dir(os.path.join(tempfile.mkdtemp(), "w"))
    >>> oct(d.stat().st_mode & 0o777)
    '0o700'
    """
    folder = Path(folder)
    if not folder.exists():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another process: checked below like any existing folder
        except OSError as err:
            raise InputError(
                f"The {what} {folder} cannot be created ({err.strerror or err}); choose a folder you may write to."
            ) from None
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"The {what} {folder} is not a folder; give a folder (it is created if missing).")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise InputError(
            f"The {what} {folder} belongs to another user (uid {info.st_uid}, you are {os.getuid()}); Nipype loads "
            "its cache as code, so only a folder of your own is used: choose one with -w (or run as its owner)."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"The {what} {folder} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'} "
            f"(mode {stat.S_IMODE(info.st_mode):o}); Nipype loads its cache as code, so anyone who can write there "
            f"could run code as you. Run `chmod go-w {folder}` or choose another folder with -w."
        )
    return folder


@contextlib.contextmanager
def exclusive_lock(folder, what, prog):
    """Hold an exclusive lock on ``folder`` (its ``.ctp_nipype.lock``) for the duration of a run.

    A second run on the same folder stops at once with :class:`BusyError` (it does not
    wait). The lock is the kernel's (``fcntl.flock``): it is released when the process
    ends, also when it is killed, so a stale lock file never blocks a later run. The file
    is removed when the run ends (a lock taken on a file that was removed meanwhile is
    taken again on the new one, so two runs never both hold it).
    """
    path = Path(folder) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no kernel lock to take; the run goes on unlocked
        yield None
        return
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or None
            handle.close()
            raise BusyError(_busy_message(folder, what, prog, holder)) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # locked the file that is there now
        except FileNotFoundError:
            pass  # the previous holder removed it just before we locked it: lock the new one
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{prog} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # removed while still locked: a run that opens it meanwhile retries on a new file
        handle.close()  # closing the file releases the lock


def _busy_message(folder, what, prog, holder):
    held = f" ({holder})" if holder else ""
    return (
        f"Another run is using the {what} {folder}{held}; two runs on the same folder would overwrite each other's "
        f"files. Wait for it to finish, or give {prog} another {what}."
    )


@contextlib.contextmanager
def locked_folders(prog, folders):
    """Lock several ``(folder, what)`` at once (each folder once, whatever its names)."""
    with contextlib.ExitStack() as stack:
        seen = set()
        for folder, what in folders:
            key = Path(folder).resolve()
            if key in seen:
                continue
            seen.add(key)
            stack.enter_context(exclusive_lock(folder, what, prog))
        yield


# --- marks on a scan's output folder ---------------------------------------------------------------


def mark_unfinished(folder, prefix, prog):
    """Write ``<prefix>_UNFINISHED.txt`` (and drop an old FAILED mark) before a scan runs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FAILED_MARK.format(prefix=prefix)).unlink(missing_ok=True)
    return _write(
        folder / UNFINISHED_MARK.format(prefix=prefix),
        f"{prog} started this scan at {time.strftime('%Y-%m-%d %H:%M:%S')} and has not finished it: the files "
        f"beside this note whose names start with {prefix} may be incomplete or from an earlier run.\n",
    )


def mark_finished(folder, prefix):
    """The scan's last step succeeded: remove its marks."""
    folder = Path(folder)
    for mark in (UNFINISHED_MARK, FAILED_MARK):
        (folder / mark.format(prefix=prefix)).unlink(missing_ok=True)


def mark_failed(folder, prefix, prog, reason):
    """Replace the UNFINISHED mark with ``<prefix>_FAILED.txt`` saying why."""
    folder = Path(folder)
    path = _write(
        folder / FAILED_MARK.format(prefix=prefix),
        f"{prog} failed on this scan at {time.strftime('%Y-%m-%d %H:%M:%S')}: the files beside this note whose "
        f"names start with {prefix} are incomplete or from an earlier run.\nReason: {reason}\n",
    )
    (folder / UNFINISHED_MARK.format(prefix=prefix)).unlink(missing_ok=True)
    return path


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path
