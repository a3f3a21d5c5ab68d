"""The workspace lock: one pipeline, or one stage, at a time in a DVC workspace.

Every stage runner takes it (whether DVC, the CLI or a Prefect flow started the stage), and so does a whole
pipeline run. A pipeline hands its lock down to the stages it starts through ``VIDSSL_WORKSPACE_LOCK`` (a random
token written in the lock file), so its own stages go on while anything else is refused, or waits when asked
to (``wait`` seconds, env ``VIDSSL_LOCK_WAIT`` for stages started by `dvc repro`).

The lock is an flock on ``.dvc/tmp/vidssl-workspace.lock``: the OS drops it when its holder dies, so a crash or a
SIGKILL never leaves a stale lock. A stage also watches its parent: when the process that started it (`dvc
repro`, a flow) dies, the stage stops itself instead of running on as an orphan next to the rerun.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from vidssl.entry import EXIT_BUSY

log = logging.getLogger(__name__)

TOKEN_ENV = "VIDSSL_WORKSPACE_LOCK"  # handed to the stages of the pipeline that holds the lock
WAIT_ENV = "VIDSSL_LOCK_WAIT"  # seconds a stage waits for a busy workspace; 0 refuses at once; "inf" waits
LOCK_NAME = "vidssl-workspace.lock"
POLL_S = 0.5
# A stage whose parent died gets SIGINT (so it unwinds: MLflow run closed, partial files left as temporaries),
# then is ended outright if it has not stopped after this many seconds.
ORPHAN_GRACE_S = 30.0

F = TypeVar("F", bound=Callable[..., Any])


class WorkspaceBusyError(RuntimeError):
    """Another pipeline or stage holds this workspace's lock."""

    exit_code = EXIT_BUSY  # 75, EX_TEMPFAIL: the command line says "try again later"


def find_workspace(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) that holds a `.dvc/` folder, else None."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def lock_path(workspace: Path) -> Path:
    return Path(workspace) / ".dvc" / "tmp" / LOCK_NAME


def read_holder(workspace: Path) -> dict[str, Any]:
    """What the lock file says about its last holder ({} when it says nothing readable)."""
    try:
        return json.loads(lock_path(workspace).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def wait_from_env(default: float = 0.0) -> float:
    """Seconds to wait for a busy workspace, from ``VIDSSL_LOCK_WAIT`` ("inf" = no limit)."""
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={text!r}: give seconds to wait for a busy workspace (0 refuses at once, "
                         "'inf' waits without limit)") from None
    if value < 0 or value != value:
        raise ValueError(f"{WAIT_ENV}={text!r}: must be 0 or more seconds (or 'inf')")
    return value


def _busy_message(workspace: Path, holder: dict[str, Any], what: str) -> str:
    who = holder.get("holder", "another run")
    since = holder.get("started")
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    return (f"workspace {workspace} is busy: {who} (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
            f"{when} holds {lock_path(workspace)}; {what} was not started. Wait for it to finish or stop it, "
            f"or let this run wait: `vidssl pipeline --wait SECONDS`, or {WAIT_ENV}=SECONDS for `dvc repro`.")


def _held_by_ancestor(workspace: Path) -> bool:
    """True when this process runs inside the pipeline that holds the lock (its token was handed down)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return False
    holder = read_holder(workspace)
    if holder.get("token") != token:
        return False
    try:  # the holder must still hold it: a stale token from a dead pipeline gives no right to run
        with open(lock_path(workspace), "r") as probe:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return _alive(int(holder.get("pid", 0)))
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parent_of(pid: int) -> int | None:
    """Parent pid of ``pid`` from /proc (None when it is gone or /proc is not there)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox"}


def _is_command_shell(pid: int) -> bool:
    """Whether ``pid`` is a shell running one command line (``sh -c ...``), not an interactive one."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or os.path.basename(argv[0].decode(errors="replace")).lstrip("-") not in SHELLS:
        return False
    for arg in argv[1:]:  # the options before the command string: `-c`, `-ec`, `--norc -c`, ...
        if not arg.startswith(b"-"):
            return False
        if not arg.startswith(b"--") and b"c" in arg:
            return True
    return False


_local = threading.local()


def _holder_above() -> int | None:
    """Pid of the pipeline that handed its lock down to this process, if any."""
    root = find_workspace()
    if root is None or not os.environ.get(TOKEN_ENV) or not _held_by_ancestor(root):
        return None
    return int(read_holder(root).get("pid", 0)) or None


@contextmanager
def workspace_lock(what: str, workspace: Path | None = None, wait: float | None = None,
                   hand_down: bool = False) -> Iterator[dict[str, Any]]:
    """Hold the workspace lock while the body runs.

    Args:
        what: who holds it, for the message another run gets (e.g. "stage pretrain", "pipeline <id>").
        workspace: the DVC workspace; default the one around the current directory. Outside any workspace
            nothing is locked.
        wait: seconds to wait for a busy workspace (None: ``VIDSSL_LOCK_WAIT``, else refuse at once).
        hand_down: set ``VIDSSL_WORKSPACE_LOCK`` in os.environ while held, so the stages this process starts
            (through `dvc repro`) run under this lock instead of being refused by it.

    Yields:
        What was written in the lock file ({} when nested inside a holder or outside a workspace).

    Raises:
        WorkspaceBusyError: someone else holds the lock and the wait ran out.
    """
    root = find_workspace(workspace) if workspace is None else Path(workspace).resolve()
    depth = getattr(_local, "depth", 0)
    if root is None or depth or _held_by_ancestor(root):
        _local.depth = depth + 1  # nested: an outer runner in this process, or the pipeline above, holds it
        try:
            yield {}
        finally:
            _local.depth = depth
        return
    wait = wait_from_env() if wait is None else wait
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_holder(root)
                if time.monotonic() >= deadline:
                    raise WorkspaceBusyError(_busy_message(root, holder, what)) from None
                if not announced:
                    log.warning("waiting for the workspace lock: %s", _busy_message(root, holder, what))
                    announced = True
                time.sleep(POLL_S)
        info = {"holder": what, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "token": secrets.token_hex(16)}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info))
        handle.flush()
        previous = os.environ.get(TOKEN_ENV)
        if hand_down:
            os.environ[TOKEN_ENV] = info["token"]
        _local.depth = 1
        try:
            yield info
        finally:
            _local.depth = 0
            if hand_down:
                if previous is None:
                    os.environ.pop(TOKEN_ENV, None)
                else:
                    os.environ[TOKEN_ENV] = previous
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


class OrphanWatch:
    """Stop this process when the process that started it dies (it would run on as an orphan otherwise).

    Polls the parent pid: once it changes, the parent is gone (the child was re-parented to init or a
    subreaper). The process then gets SIGINT, and is ended with exit code 143 if it has not stopped after
    ``grace`` seconds. Linux's PR_SET_PDEATHSIG would fire on the death of the parent's *thread*, which for a
    stage started from a worker thread comes too early; polling has no such trap.
    """

    def __init__(self, poll: float = 1.0, grace: float = ORPHAN_GRACE_S,
                 on_orphan: Callable[[int], None] | None = None, holder: int | None = None) -> None:
        self.parent = os.getppid()
        # `dvc repro` runs a stage through `$SHELL -c`, and /bin/sh (dash) does not exec the command: the stage's
        # parent is then a shell that outlives a killed dvc. Watch the shell's own parent as well.
        self.grandparent = _parent_of(self.parent) if _is_command_shell(self.parent) else None
        self.holder = holder  # the pipeline that handed its lock down: its death orphans this stage too
        self.poll, self.grace = poll, grace
        self.on_orphan = on_orphan or self._stop
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vidssl-orphan-watch", daemon=True)

    def start(self) -> "OrphanWatch":
        # A process started in the background by a non-interactive shell (`nohup dvc repro &`, cron jobs) inherits
        # SIGINT ignored, and the stop below is a SIGINT: take it back, so that an orphan stops cleanly at once
        # instead of being cut off after the grace period. Only the main thread may set a handler.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.poll):
            if os.getppid() != self.parent:
                self.on_orphan(self.parent)
                return
            if self.grandparent is not None and _parent_of(self.parent) != self.grandparent:
                self.on_orphan(self.grandparent)
                return
            if self.holder is not None and not _alive(self.holder):
                self.on_orphan(self.holder)
                return

    def _stop(self, parent: int) -> None:
        log.error("the process that started this stage (pid %d) has died; stopping this stage so that it does "
                  "not run on as an orphan (a rerun resumes from its checkpoints)", parent)
        os.kill(os.getpid(), signal.SIGINT)
        if not self._stopped.wait(self.grace):
            os._exit(143)


def locked_stage(name: str) -> Callable[[F], F]:
    """Decorator for a stage runner: hold the workspace lock and watch for orphaning while it runs.

    Under torchrun only the first process takes the lock; the other ranks are its siblings and share it.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            watch = OrphanWatch(holder=_holder_above()).start() if getattr(_local, "depth", 0) == 0 else None
            try:
                if int(os.environ.get("RANK", "0") or 0) != 0:
                    return fn(*args, **kwargs)
                with workspace_lock(f"stage {name}"):
                    return fn(*args, **kwargs)
            finally:
                if watch is not None:
                    watch.stop()

        return run  # type: ignore[return-value]

    return wrap
