"""Extraction fanned out over a Dask cluster through Prefect's Dask task runner (``vidssl extract --dask ADDRESS``).

Each video is one Prefect task (``extract_one``) submitted to the Dask scheduler at ADDRESS; the workers read
``src`` and write packs to ``out`` at the same paths as this machine, so both must be on a shared filesystem
(NFS, a cluster file system or one machine), and task runs report to the Prefect server named by PREFECT_API_URL,
which the workers must reach too. Packs are written atomically by whichever worker decodes them, so a
lost worker costs only its current video, and a rerun resumes like a local one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vidssl.data.extract import VideoInput, extract_one


def extract_on_dask(items: Sequence[VideoInput], out: Path, kw: dict[str, Any], address: str) -> list[dict[str, Any]]:
    """Extract ``items`` on the Dask cluster at ``address``; return their report records (in ``items`` order).

    Raises:
        EnvironmentFault: a worker hit a machine fault (disk full, permissions, file handles); no quarantine.
    """
    import os

    from prefect import flow, task, unmapped
    from prefect_dask import DaskTaskRunner

    if not os.environ.get("PREFECT_API_URL"):
        # without it each Dask worker would start a throwaway Prefect server of its own for its task runs
        raise ValueError("extract --dask needs a Prefect server that this machine and the Dask workers both reach: "
                         "start one (prefect server start) and set PREFECT_API_URL here and on the workers")

    one = task(extract_one, name="extract-video", retries=0, cache_policy=None)

    @flow(name="vidssl-extract", task_runner=DaskTaskRunner(address=address), log_prints=False)
    def fan_out() -> list[dict[str, Any]]:
        futures = one.map(list(items), unmapped(Path(out)), **{k: unmapped(v) for k, v in kw.items()})
        return [f.result() for f in futures]

    return fan_out()
