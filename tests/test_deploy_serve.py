"""`vidssl serve`: a Prefect server on 127.0.0.1 with this checkout's deployments and their schedule, found by
`vidssl pipeline`, and gone with its whole process tree on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str) -> object:
    request = urllib.request.Request(url, data=b"{}" if url.endswith("/filter") else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_serve_registers_scheduled_deployments_and_stops_its_tree(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # The server's scheduler off: its nightly cron would otherwise become scheduled runs that `vidssl serve`
    # starts when their time comes, a whole pipeline in this checkout should the test span 03:30 UTC.
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PYTHONPATH=str(ROOT), PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
    serve = subprocess.Popen([sys.executable, "-m", "vidssl.cli", "serve", "--port", str(port), "--cron",
                              "30 3 * * *"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline, names = time.monotonic() + 300, set()
        while names != {"nightly", "on-demand"}:
            assert serve.poll() is None, serve.stdout.read()
            assert time.monotonic() < deadline, "the deployments were never registered"
            time.sleep(2)
            try:
                deployments = _get(f"{api}/deployments/filter")
            except OSError:
                continue
            names = {d["name"] for d in deployments}
        nightly = next(d for d in deployments if d["name"] == "nightly")
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 3 * * *"]
        assert "repo" not in nightly["parameter_openapi_schema"]["properties"]
        record = json.loads((home / "server.json").read_text())
        assert record["api_url"] == api and record["workspace"] == str(ROOT)
        # `vidssl pipeline` of this workspace reports to it
        probe = subprocess.run([sys.executable, "-c", "import os, flows.pipeline; print(os.environ['PREFECT_API_URL'])"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert probe.stdout.strip() == api, probe.stderr[-2000:]
        runs = _get(f"{api}/flow_runs/filter")
        assert [r for r in runs if r["deployment_id"] == nightly["id"]] == []  # nothing scheduled from the cron
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=90)
        finally:
            if _group_alive(serve.pid):
                os.killpg(serve.pid, signal.SIGKILL)
                pytest.fail("SIGTERM left processes of `vidssl serve` running")
    assert not (home / "server.json").exists()
    with pytest.raises(OSError):
        _get(f"{api}/health")
