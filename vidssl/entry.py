"""Process entry helpers shared by the CLI and the DVC stages: logging, exit codes and readable failures.

Every user-facing program (each `vidssl` command, each stages/*.py) ends through :func:`run_main`: bad input or
an environment fault prints one line to stderr (file, key or value, and what to do) and exits with the code
below; the traceback only with ``--debug`` or ``VIDSSL_DEBUG=1``.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from typing import Any, Callable, NoReturn

# Exit codes, one table for the whole tool (also printed by `vidssl --help`).
EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error: a bug; rerun with --debug and report the traceback
EXIT_BAD_INPUT = 2  # bad params, arguments, paths or data: the message says what to change
EXIT_QUARANTINED = 3  # extract quarantined at least one video and extract.fail_on_bad_input asked to stop
EXIT_ENVIRONMENT = 74  # EX_IOERR: the machine, not the input: disk full, permissions, open files, a service down
EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the workspace; try again later
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT: finished work is kept and a rerun resumes

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "unexpected error (a bug): rerun with --debug for the traceback",
    EXIT_BAD_INPUT: "bad input (params, arguments, paths, data): the message says what to fix",
    EXIT_QUARANTINED: "extract quarantined videos (extract.fail_on_bad_input); the others were extracted",
    EXIT_ENVIRONMENT: "environment fault (disk full, permissions, open files, a service down, a broken install)",
    EXIT_BUSY: "another run holds the workspace; wait for it or try again later",
    EXIT_INTERRUPTED: "interrupted; finished work is kept and a rerun resumes",
}

DEBUG_ENV = "VIDSSL_DEBUG"

# errno values that describe the machine rather than the input.
_ENV_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.EROFS, errno.EDQUOT,
               errno.ENOMEM, errno.EIO}


class UserError(ValueError):
    """Bad input the user can fix; ``exit_code`` is what the program exits with (default 2)."""

    exit_code = EXIT_BAD_INPUT


class EnvironmentFault(RuntimeError):
    """The machine or a service failed (not the input); exits with 74 unless ``exit_code`` says otherwise."""

    exit_code = EXIT_ENVIRONMENT


def exit_codes_text() -> str:
    """The exit-code table as lines for help text."""
    return "\n".join(f"{code:>3}  {what}" for code, what in EXIT_CODES.items())


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow", "urllib3", "filelock", "great_expectations", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_telemetry() -> None:
    """Analytics off for every tool we drive (the machines here are offline, and users did not opt in)."""
    for key, value in {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}.items():
        os.environ.setdefault(key, value)


def classify(err: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception that ends a program."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code, _one_line(err)
    if isinstance(err, ImportError) and not (err.name or "").startswith("vidssl"):
        # a library that is missing or broken (torch, pydantic, ...): the install, not the input, needs fixing
        module = (err.name or "a module").split(".")[0]
        return EXIT_ENVIRONMENT, (f"cannot import {module} ({_one_line(err).splitlines()[0]}): the Python "
                                  f"environment is incomplete or broken; reinstall with `bash scripts/install.sh` "
                                  f"(or `pip install -e .`) and rerun: finished work is kept")
    if isinstance(err, OSError) and err.errno in _ENV_ERRNOS:
        what = os.strerror(err.errno) if err.errno else type(err).__name__
        path = f" {err.filename}" if err.filename else ""
        return EXIT_ENVIRONMENT, (f"{what}:{path} ({err.strerror or err}); free space, fix permissions or raise "
                                  "limits, then rerun: finished work is kept")
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and err.filename \
            and str(err).startswith("[Errno"):
        # the bare OS message: say what is missing and how it usually comes to exist
        what = {FileNotFoundError: "not found", NotADirectoryError: "a path part is not a folder",
                IsADirectoryError: "is a folder, a file was expected"}[type(err)]
        return EXIT_BAD_INPUT, (f"{err.filename}: {what}; check the path, or run the stage that writes it first "
                                "(`dvc repro`, or its `vidssl` command)")
    if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_BAD_INPUT, _one_line(err)
    if isinstance(err, OSError):
        return EXIT_ENVIRONMENT, f"{_one_line(err)}; check the machine (disk, permissions, network) and rerun"
    return EXIT_FAILURE, (f"unexpected {type(err).__name__}: {_one_line(err)} (a bug; rerun with --debug or "
                          f"{DEBUG_ENV}=1 for the traceback, and report it)")


def _one_line(err: BaseException) -> str:
    """The exception's message; a multi-line one keeps its lines (each names its own key), blank lines dropped."""
    text = str(err)
    return "\n".join(line for line in text.strip().splitlines() if line.strip()) or type(err).__name__


def fail(err: BaseException) -> NoReturn:
    """Print ``err`` as the program's last words (``error: ...``) and exit with its code."""
    code, message = classify(err)
    if debug_enabled():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    lines = message.splitlines()
    if getattr(err, "one_problem_per_line", False):
        text = "\n".join(f"error: {line}" for line in lines)  # each line names its own file or key
    else:
        text = "\n".join([f"error: {lines[0]}", *(f"  {line}" for line in lines[1:])])
    print(text, file=sys.stderr)
    sys.exit(code)


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; any exception ends the process through :func:`fail` (SystemExit and click's own exits pass)."""
    try:
        return fn()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug_enabled():
            traceback.print_exc(file=sys.stderr)
        print(f"error: {EXIT_CODES[EXIT_INTERRUPTED]}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - the one place every failure becomes a readable line
        if type(err).__module__.startswith("click"):
            raise  # click/typer's own usage errors and exits: click prints and exits with their codes
        fail(err)


def run_main(fn: Callable[[], Any]) -> None:
    """Run ``fn`` as a program: set up logging, print failures as one readable line, exit with the code above."""
    setup_logging()
    quiet_telemetry()
    guard(fn)
