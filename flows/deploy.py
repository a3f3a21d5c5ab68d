"""Serve the vidssl pipeline of this checkout: a nightly cron deployment and an on-demand one, with one command.

    vidssl serve                                # = python flows/deploy.py: server + deployments until Ctrl-C
    python flows/deploy.py --dry-run            # build them, print names and schedules, exit
    prefect deployment run 'vidssl-pipeline/on-demand' --param force=true     # from another shell

With no PREFECT_API_URL set, this starts a Prefect server (`prefect server start`) on --host/--port (default
127.0.0.1:4200), its state (SQLite database, logs) in PREFECT_HOME (default <checkout>/.prefect), and records
it in PREFECT_HOME/server.json so that `vidssl pipeline` and `prefect` commands of this workspace report to it.
With PREFECT_API_URL set (a shared server), the deployments are registered there instead and no server starts.
The served runs execute in subprocesses on this machine, in this checkout: the deployments have no repo
parameter. Stop with Ctrl-C or SIGTERM; the server this command started stops with it.

Operating with work pools instead (a `cpu` and a `gpu` worker, each in its own checkout) uses prefect.yaml:
see docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python flows/deploy.py` puts flows/ first

from flows.pipeline import SERVER_RECORD, WORKSPACE, with_parent_death_signal, workspace_pipeline  # noqa: E402  (also Prefect defaults)
from vidssl.pipeline.servers import stop_group  # noqa: E402

NIGHTLY_CRON = "0 2 * * *"
SERVER_START_TIMEOUT_S = 180.0


def build_deployments(cron: str = NIGHTLY_CRON, timezone: str = "UTC") -> list[Any]:
    """The two runner deployments of this checkout's pipeline (built locally; nothing is sent to an API).

    Args:
        cron: nightly schedule, cron syntax.
        timezone: IANA zone the cron is read in.

    Returns:
        [nightly, on-demand] `RunnerDeployment`s for `prefect.serve`.
    """
    from prefect.schedules import Cron

    nightly = workspace_pipeline.to_deployment(
        name="nightly", schedule=Cron(cron, timezone=timezone), tags=["vidssl", "nightly"],
        description=f"Nightly run in {WORKSPACE}: DVC reruns only what new videos or changed params touch.",
    )
    on_demand = workspace_pipeline.to_deployment(
        name="on-demand", tags=["vidssl", "on-demand"],
        description=f"Run by hand in {WORKSPACE}: `prefect deployment run 'vidssl-pipeline/on-demand'`.",
    )
    return [nightly, on_demand]


def describe(deployment: Any) -> str:
    """One line: flow/deployment name, schedules (or 'on demand') and parameters."""
    crons = [f"cron {s.schedule.cron!r} ({s.schedule.timezone})" for s in deployment.schedules or []]
    when = ", ".join(crons) or "on demand"
    return f"{workspace_pipeline.name}/{deployment.name}: {when}; workspace {WORKSPACE}"


def _healthy(api_url: str) -> bool:
    request = urllib.request.Request(f"{api_url}/health")
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def prefect_server(host: str, port: int, home: Path) -> Iterator[str]:
    """Run `prefect server start` on host:port (state in `home`) for the life of the block; yields the API URL.

    The server gets its own process group, so stopping it stops its workers too.
    """
    api_url = f"http://{host}:{port}/api"
    if _healthy(api_url):
        raise RuntimeError(f"something already answers on {host}:{port}; pick another --port, or point "
                           f"PREFECT_API_URL={api_url} at it to use that server")
    # The UI finds its API from these settings, not from --host/--port: without them a server on any port but
    # 4200 serves a UI that calls 127.0.0.1:4200 and shows nothing. A PREFECT_UI_API_URL (proxy) still wins.
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": host,
           "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "ab")
    # its own process group (stopped as one), and SIGTERM if this process dies without cleaning up (SIGKILL)
    cmd = with_parent_death_signal([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
                                    str(port)])
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record = home / SERVER_RECORD
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(api_url):
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {proc.returncode} before answering; see "
                                   f"{home / 'server.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer on {api_url} within "
                                   f"{SERVER_START_TIMEOUT_S:.0f} s; see {home / 'server.log'}")
            time.sleep(0.5)
        record.write_text(json.dumps({"api_url": api_url, "pid": proc.pid, "workspace": str(WORKSPACE)}))
        yield api_url
    finally:
        record.unlink(missing_ok=True)
        stop_group(proc, 20.0)  # the library's: SIGTERM the whole group, SIGKILL what is left
        log.close()


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops serving like Ctrl-C does (left alone, `serve` hangs on SIGTERM in Prefect 3.8)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the deployments, or print them with --dry-run."""
    parser = argparse.ArgumentParser(description="Serve this checkout's vidssl pipeline deployments.")
    parser.add_argument("--host", default="127.0.0.1", help="address of the Prefect server started here "
                        "(default 127.0.0.1; ignored with PREFECT_API_URL)")
    parser.add_argument("--port", type=int, default=4200, help="its port (default 4200)")
    parser.add_argument("--cron", default=NIGHTLY_CRON, help=f"nightly schedule (default: {NIGHTLY_CRON!r})")
    parser.add_argument("--timezone", default="UTC", help="time zone of the cron schedule (default: UTC)")
    parser.add_argument("--dry-run", action="store_true", help="print the deployments and exit")
    args = parser.parse_args(argv)
    if not (WORKSPACE / "dvc.yaml").is_file():
        print(f"error: {WORKSPACE / 'dvc.yaml'} not found: serve from a vidssl checkout", file=sys.stderr)
        return 2
    try:
        deployments = build_deployments(cron=args.cron, timezone=args.timezone)
    except ValueError as exc:
        print(f"error: --cron {args.cron!r} / --timezone {args.timezone!r}: {exc}", file=sys.stderr)
        return 2
    for deployment in deployments:
        print(describe(deployment), flush=True)
    if args.dry_run:
        return 0
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _interrupt_on_sigterm()
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    try:
        if os.environ.get("PREFECT_API_URL"):
            print(f"registering with the Prefect server at {os.environ['PREFECT_API_URL']}", flush=True)
            serve(*deployments)
            return 0
        with prefect_server(args.host, args.port, home) as url:
            os.environ["PREFECT_API_URL"] = url  # inherited by the flow-run subprocesses
            print(f"Prefect server at {url[:-4]} (state in {home}); to trigger from another shell: "
                  f"PREFECT_API_URL={url} prefect deployment run 'vidssl-pipeline/on-demand'", flush=True)
            with temporary_settings(updates={PREFECT_API_URL: url}):
                serve(*deployments)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
