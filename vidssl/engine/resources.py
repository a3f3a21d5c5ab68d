"""CPU threads that follow what this process may use, not the host's core count.

A container or a CPU set gives a process fewer cores than ``os.cpu_count()`` reports; torch and its loader
workers sized by the host then spin against each other (several demo pipelines on a 2-core machine took 15-25x
longer per epoch). The budget is the smaller of the affinity mask and the cgroup CPU quota, split between the
trainer's intra-op threads and the loader workers (one thread each).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def split_threads(cpus: int, workers: int) -> tuple[int, int]:
    """(trainer threads, loader workers) for ``cpus`` CPUs and ``workers`` requested loader workers.

    Workers are capped so that the trainer keeps at least one CPU of its own; the trainer takes what is left.
    """
    workers = min(workers, max(0, cpus - 1))
    return max(1, cpus - workers), workers


def configure_threads(workers: int, threads: int = 0, where: str = "train") -> int:
    """Set torch's intra-op threads for this process and return the loader workers to use.

    ``threads`` > 0 fixes the trainer's threads (``train.threads``); 0 derives them from :func:`available_cpus`,
    divided among the processes torchrun started on this machine (``LOCAL_WORLD_SIZE``).
    """
    # torchrun's processes on one machine share its CPUs: each takes its part.
    cpus = max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    trainer, used = split_threads(cpus, workers)
    if threads:
        trainer = threads
    if used < workers:
        log.info("%s: %d loader worker(s) instead of %d: this process may use %d CPU(s)", where, used, workers,
                 cpus)
    torch.set_num_threads(trainer)
    return used
