"""Serve the vidssl pipeline locally: a nightly cron deployment and an on-demand one, with one command.

    python flows/deploy.py                      # serve both until Ctrl-C (temporary local server if none set)
    python flows/deploy.py --dry-run            # build them, print names and schedules, exit
    PREFECT_API_URL=<printed url> prefect deployment run 'vidssl-pipeline/on-demand' --param force=true

`serve` runs each flow run in a subprocess on this machine. With no PREFECT_API_URL set, this script starts
one temporary API server on 127.0.0.1 (state in PREFECT_HOME, default .prefect/) and shares it with those
subprocesses; it lives as long as this command, and so does the schedule. Point PREFECT_API_URL at a
`prefect server start` to keep history and the UI between sessions. Stop serving with Ctrl-C (SIGINT):
in Prefect 3.8.8 a SIGTERM leaves `serve` hanging while it pauses the deployments.

GPU stages (pretrain, finetune, retrieve) carry the task tag "gpu". Two ways to use it:

1. One GPU box running everything: cap GPU work across all flow runs with a tag concurrency limit,
       prefect concurrency-limit create gpu 1
   so a nightly run and an on-demand run never train at the same time.
2. Separate GPU workers: in Prefect 3 a task runs inside its flow's process, so a tag alone does not move it
   to another machine. Give the GPU stages their own deployment on a `gpu` work pool, with a worker there:
       prefect work-pool create gpu --type process
       prefect worker start --pool gpu              # on the GPU host, in its own checkout of this repo
       pipeline.from_source("<git url of this repo>", "flows/pipeline.py:pipeline").deploy(
           name="gpu-stages", work_pool_name="gpu",
           parameters={"stages": ["pretrain", "finetune", "retrieve"]})
   Then a CPU-side flow runs `pipeline(stages=[synth..validate])`, `dvc push`, then
   `prefect.deployments.run_deployment("vidssl-pipeline/gpu-stages", parameters={"pipeline_id": <its id>})`
   (the GPU run does `dvc pull` first and `dvc push` after), then `pipeline(stages=["evaluate"])`. Passing
   `pipeline_id` keeps every stage's MLflow run under one parent. Each checkout takes its own workspace
   lock, so the two parts must not share one workspace directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python flows/deploy.py` puts flows/ first

from flows.pipeline import WORKSPACE, pipeline  # (also applies the offline Prefect defaults)

NIGHTLY_CRON = "0 2 * * *"


def build_deployments(repo: str, cron: str = NIGHTLY_CRON, timezone: str = "UTC") -> list[Any]:
    """The two runner deployments of the pipeline flow (built locally; nothing is sent to an API).

    Args:
        repo: absolute path of the DVC workspace the runs work in (a served run's cwd is not ours to pick).
        cron: nightly schedule, cron syntax.
        timezone: IANA zone the cron is read in.

    Returns:
        [nightly, on-demand] `RunnerDeployment`s for `prefect.serve`.
    """
    from prefect.schedules import Cron

    params = {"repo": repo}
    nightly = pipeline.to_deployment(
        name="nightly", schedule=Cron(cron, timezone=timezone), parameters=params, tags=["vidssl", "nightly"],
        description="Nightly run: DVC reruns only what new videos or changed params touch.",
    )
    on_demand = pipeline.to_deployment(
        name="on-demand", parameters=params, tags=["vidssl", "on-demand"],
        description="Run by hand: `prefect deployment run 'vidssl-pipeline/on-demand'`.",
    )
    return [nightly, on_demand]


def describe(deployment: Any) -> str:
    """One line: flow/deployment name, schedules (or 'on demand') and parameters."""
    crons = [f"cron {s.schedule.cron!r} ({s.schedule.timezone})" for s in deployment.schedules or []]
    when = ", ".join(crons) or "on demand"
    return f"{pipeline.name}/{deployment.name}: {when}; parameters {deployment.parameters}"


def _shared_local_api() -> AbstractContextManager[Any]:
    """Start a temporary local API when none is configured, and share it with the flow-run subprocesses.

    Left to itself, each served run's subprocess starts its own temporary server on the same SQLite file.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        return nullcontext()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # binds 127.0.0.1 on a free port; stopped at exit
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the flow-run subprocesses
    print(f"to trigger from another shell: PREFECT_API_URL={server.api_url} "
          f"prefect deployment run 'vidssl-pipeline/on-demand'")
    return temporary_settings(updates={PREFECT_API_URL: server.api_url})


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the deployments, or print them with --dry-run."""
    parser = argparse.ArgumentParser(description="Serve the vidssl pipeline deployments locally.")
    parser.add_argument("--repo", default=str(WORKSPACE), help="DVC workspace (default: this checkout)")
    parser.add_argument("--cron", default=NIGHTLY_CRON, help=f"nightly schedule (default: {NIGHTLY_CRON!r})")
    parser.add_argument("--timezone", default="UTC", help="time zone of the cron schedule (default: UTC)")
    parser.add_argument("--dry-run", action="store_true", help="print the deployments and exit")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if not (repo / "dvc.yaml").is_file():
        print(f"error: {repo / 'dvc.yaml'} not found: pass --repo <DVC workspace>", file=sys.stderr)
        return 2
    deployments = build_deployments(str(repo), cron=args.cron, timezone=args.timezone)
    for deployment in deployments:
        print(describe(deployment))
    if not args.dry_run:
        from prefect import serve

        with _shared_local_api():
            serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
