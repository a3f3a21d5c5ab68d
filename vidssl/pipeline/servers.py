"""The MLflow UI and tracking server as child process trees that stop whole.

`mlflow server` starts uvicorn, which starts worker processes; a Ctrl-C that reaches only the first of them
leaves the others holding the port. Here the server runs in a process group of its own: SIGINT or SIGTERM to
`vidssl ui`/`vidssl server` is passed to the whole group, escalated to SIGKILL after a grace period, and the
children are told by the kernel to stop if this process dies without a word (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


def ui_command(backend_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` over a local store, for browsing (one worker is plenty for one reader)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--host", host,
            "--port", str(port), "--workers", str(workers)]


def server_command(backend_uri: str, artifacts: str, host: str, port: int, workers: int = 2) -> list[str]:
    """`mlflow server` as a shared tracking server: runs in ``backend_uri``, artifacts proxied to ``artifacts``."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--serve-artifacts", "--artifacts-destination", artifacts, "--host", host, "--port", str(port),
            "--workers", str(workers)]


def sqlite_uri(path: Path) -> str:
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> int:
    """SIGTERM the child's whole process group, SIGKILL what is left after ``grace_s``; returns its exit code."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not _group_alive(proc.pid):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader as soon as it exits
            if proc.returncode is not None and not _group_alive(proc.pid):
                break
            time.sleep(0.1)
    return proc.wait()


def run_tree(cmd: list[str], grace_s: float = GRACE_S, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in its own process group until it exits or this process gets SIGINT/SIGTERM.

    Returns:
        The child's exit code, or 128 + the signal number when stopped by a signal.
    """
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent,
                            env={**os.environ, **(env or {})})
    got: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        got.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while proc.poll() is None and not got:
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        code = stop_group(proc, grace_s)
    return 128 + got[0] if got else code
