"""How every command line reports errors: one clear line, a non-zero exit, a traceback only with --debug."""

from __future__ import annotations

import functools
import re
import sys

#: exit code for input the user must fix
EXIT_INPUT_ERROR = 2
#: exit code for an unexpected failure
EXIT_FAILURE = 1


def one_line(err):
    """An exception as one line of text: what is wrong (and, from our errors, what to do).

    Line breaks (numpy, torch and nibabel messages have them) are folded into
    spaces; an ``OSError`` from the system (``[Errno 13] Permission denied: 'x'``)
    is written as what happened to which path.

    >>> one_line(PermissionError(13, "Permission denied", "/data/out"))
    'Permission denied: /data/out (check the path and that you may read or write there).'
    >>> one_line(ValueError("first line\\n  second line"))
    'first line second line'
    """
    if isinstance(err, OSError) and err.strerror and getattr(err, "filename", None):
        return f"{err.strerror}: {err.filename} (check the path and that you may read or write there)."
    text = str(err) or type(err).__name__
    return re.sub(r"\s*\n\s*", " ", text.strip())


def user_facing(prog):
    """Decorate ``main(argv)`` so that expected errors print one line and exit non-zero.

    ``ValueError`` (which covers the package's input, timing and concentration
    errors) and ``OSError`` (missing or unwritable paths) are the user's to fix;
    anything else is a bug and says so. ``--debug`` in argv re-raises.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            args = sys.argv[1:] if argv is None else list(argv)
            debug = "--debug" in args
            try:
                return main(args)
            except KeyboardInterrupt:
                if debug:
                    raise
                print(f"{prog}: interrupted (Ctrl-C): every worker stopped; a scan not finished keeps its "
                      "_UNFINISHED.txt note, and the same command with the same work folder resumes.",
                      file=sys.stderr, flush=True)
                return 130
            except (ValueError, OSError) as err:
                if debug:
                    raise
                print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
                return EXIT_INPUT_ERROR
            except Exception as err:  # noqa: BLE001 - last resort, reported as a bug
                if debug:
                    raise
                print(
                    f"{prog}: unexpected {type(err).__name__}: {one_line(err)} "
                    "(run again with --debug for the traceback, and please report it)",
                    file=sys.stderr,
                )
                return EXIT_FAILURE

        return wrapper

    return decorate
