"""End to end, the way an operator runs it, on one machine: a Prefect server (basic auth on), a `cpu` and a
`gpu` process worker (the gpu one in its own clone), the prefect.yaml deployments, and one on-demand run that
sends pretrain/finetune/retrieve to the gpu worker through a DVC remote. It must end with the metrics that a
plain `dvc repro` of the same commit gives, with every stage's MLflow run under one parent run."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tinyrepo import DVC, tiny_repo

AUTH = "operator:not-a-real-secret"
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
          "GIT_COMMITTER_EMAIL": "t@example.org"}


# Wall-clock and throughput telemetry differ between any two runs; every other metric must be equal.
_TIMING = ("seconds", "clips_per_s", "data_wait", "data_wait_steady", "loader_start_seconds", "peak_gpu_mem_gib")


def _results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in _TIMING}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _checkout(dest: Path, remote: Path, env: dict[str, str]) -> Path:
    """A git + DVC project with this repo's pipeline on the tiny config and a local DVC remote, committed."""
    tiny_repo(dest, files=("prefect.yaml",), folders=("flows",), env=env)
    for cmd in ([DVC, "remote", "add", "-d", "store", str(remote)], ["git", "add", "-A"],
                ["git", "commit", "-qm", "pipeline"]):
        _run(cmd, dest, env)
    return dest


class Api:
    """The Prefect REST API with basic auth (the test never imports a Prefect client of its own)."""

    def __init__(self, url: str, auth: str | None = AUTH) -> None:
        self.url, self.auth = url, auth

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        if self.auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None
        except (urllib.error.URLError, OSError):
            return 0, None  # not listening (yet)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group started with start_new_session: SIGINT, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group after its leader
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass


@pytest.mark.slow
def test_on_demand_run_crosses_cpu_and_gpu_workers_and_matches_dvc_repro(tmp_path: Path) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIDSSL_", "MLFLOW_"))}
    base_env.update(GIT_ID, DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false")
    remote = tmp_path / "dvc-remote"
    cpu = _checkout(tmp_path / "cpu", remote, base_env)
    gpu, plain = tmp_path / "gpu", tmp_path / "plain"
    for clone in (gpu, plain):
        _run(["git", "clone", "-q", str(cpu), str(clone)], tmp_path, base_env)

    def env_for(checkout: Path, **extra: str) -> dict[str, str]:
        return {**base_env, "PYTHONPATH": str(checkout), **extra}

    # The reference: plain `dvc repro` of the same commit, with its own MLflow store (runs while Prefect starts).
    reference = subprocess.Popen([DVC, "repro"], cwd=plain, env=env_for(
        plain, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'plain-mlflow.db'}"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client_env = {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_HOME": str(home),
                  "MLFLOW_TRACKING_URI": tracking}
    procs: list[subprocess.Popen] = []
    try:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env={**base_env, "PREFECT_HOME": str(home),
                                   "PREFECT_SERVER_API_AUTH_STRING": AUTH}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(server)
        api, deadline = Api(url), time.monotonic() + 240
        while api.call("GET", "/health")[0] != 200:
            assert server.poll() is None and time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(1)
        assert Api(url, auth=None).call("POST", "/deployments/filter", {})[0] == 401  # no entry without auth

        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
        for pool in ("cpu", "gpu"):
            _run([*prefect, "work-pool", "create", pool, "--type", "process"], cpu, env_for(cpu, **client_env))
        _run([*prefect, "deploy", "--name", "on-demand"], cpu, env_for(cpu, **client_env))
        _run([*prefect, "deploy", "--name", "gpu"], gpu, env_for(gpu, **client_env))
        status, on_demand = api.call("GET", "/deployments/name/vidssl-pipeline/on-demand")
        assert status == 200 and "repo" not in on_demand["parameter_openapi_schema"]["properties"]
        assert on_demand["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                            {"directory": str(cpu)}}]  # bound when built
        for pool, checkout in (("cpu", cpu), ("gpu", gpu)):
            procs.append(subprocess.Popen([*prefect, "worker", "start", "--pool", pool], cwd=checkout,
                                          env=env_for(checkout, **client_env), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))

        status, run = api.call("POST", f"/deployments/{on_demand['id']}/create_flow_run", {})
        assert status == 201, status
        deadline = time.monotonic() + 1200
        while True:
            _, state = api.call("GET", f"/flow_runs/{run['id']}")
            if state and state["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, f"the on-demand run did not finish: {state['state']}"
            time.sleep(3)
        assert state["state"]["type"] == "COMPLETED", state["state"]
        assert state["state"]["message"].startswith("reran 8 of 8 stage(s)"), state["state"]["message"]
        _, children = api.call("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {
            "operator": "and_", "any_": [run["id"]]}}})
        _, gpu_dep = api.call("GET", "/deployments/name/vidssl-gpu-stages/gpu")
        gpu_runs = [c for c in children or [] if c["deployment_id"] == gpu_dep["id"]]
        assert len(gpu_runs) == 1 and gpu_runs[0]["state"]["type"] == "COMPLETED", children
    finally:
        for proc in reversed(procs):
            _stop(proc)
        reference_rc = reference.wait(timeout=1200)

    # The GPU stages ran in the gpu clone; their models came back to the CPU checkout through the DVC remote.
    assert list((gpu / "models" / "pretrain_state").glob("*/e*-s*-*.pt"))  # per run key, checksummed
    assert not (cpu / "models" / "pretrain_state").exists()
    assert (cpu / "models" / "pretrain" / "backbone.pt").read_bytes() == \
        (gpu / "models" / "pretrain" / "backbone.pt").read_bytes()
    # ... and the run ends with the metrics of a plain `dvc repro` of the same commit.
    assert reference_rc == 0, reference.stderr.read()[-3000:]
    crossed = json.loads((cpu / "metrics" / "summary.json").read_text())
    alone = json.loads((plain / "metrics" / "summary.json").read_text())
    for part in ("retrieval", "finetune"):
        for name in ("random_init", "pretrained"):
            a, b = crossed[part][name], alone[part][name]
            assert _results(a) == _results(b)
    assert crossed["pretrain"]["final_loss"] == alone["pretrain"]["final_loss"]

    # One MLflow parent run (the on-demand flow run) holds every stage, from both workers.
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("vidssl").experiment_id])
    parents = [r for r in runs if r.data.tags.get("vidssl.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["vidssl.pipeline_id"] == run["id"]
    stages = {r.data.tags["vidssl.stage"]: r for r in runs if "vidssl.stage" in r.data.tags}
    assert {"pretrain", "finetune", "retrieve"} <= set(stages)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in stages.values())
    assert stages["pretrain"].data.tags["flow_run_id"] == gpu_runs[0]["id"]  # trained by the gpu worker's run
    # Every process this test started is gone.
    for proc in procs:
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
