"""scripts/gpu_checks.sh, the one prepared run of every GPU check, run small on the CPU
(``GPU_CHECKS_DEVICE=cpu``): every step must finish and leave its figures in the summary, so the script is ready
whenever a GPU machine is at hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_checks_run_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECKS_DEVICE": "cpu", "PYTHON": sys.executable}
    run = subprocess.run(["bash", "scripts/gpu_checks.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    steps = dict(re.findall(r"^- (\w+): (.*)$", summary, re.M))
    assert set(steps) == {"pytest_gpu", "gpu_bench", "retrieval", "augment", "plan_iic_r3d_ucf101"}, summary
    assert all(v.startswith("exit 0,") for v in steps.values()), steps

    # bench/gpu.sh: a row per method with figures (the tiny backbone on a CPU), in its summary table
    rows = re.findall(r"^\| tiny \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|", summary, re.M)
    assert [r[0] for r in rows] == ["iic", "moco", "be"], summary
    assert all(float(fp32) > 0 and float(bf16) > 0 for _, fp32, bf16, _ in rows)
    # retrieval: every way ranks alike; the ratios are printed
    assert "same top-k accuracies in every way: True" in summary
    assert re.search(r"ours / bare torch time: [\d.]+x", summary)
    # augmentation: one row per method asked for
    assert len(re.findall(r"^\| demo .* \| (iic|be) \| [\d.]+ \| [\d.]+ \| [\d.]+x \|$", summary, re.M)) == 2
    # plan: the measured memory and the batch that fits 80 GiB
    assert re.search(r"activation memory per sample .*: [\d.]+ MiB", summary)
    assert "global batch 16 over 1 GPU(s) of 80 GiB" in summary
    # pytest -m gpu: without CUDA every GPU test skips (collected and importable, none failing)
    assert re.search(r"^\d+ skipped", (out / "pytest_gpu.log").read_text(), re.M)
