#!/usr/bin/env bash
# GPU benchmark: IIC, MoCo and BE on R3D-18 and I3D (16x112x112): clips/s and peak memory in bf16 (vidssl) vs
# fp32 on the contiguous layout (the seeds' loop style), and the data-wait fraction with frames from the store.
# Prepared to finish within 6 minutes on one H100 or H200; prints one summary table.
#   bash bench/gpu.sh                      # on a GPU machine, from the repository root
#   bash bench/gpu.sh --device cpu --tiny  # the same script on a CPU (tiny backbone, small clips)
# Extra arguments go to bench/bench_gpu.py (--methods, --backbones, --batch, --steps, --workers ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}" MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout "${GPU_BENCH_TIMEOUT:-360}" python bench/bench_gpu.py "$@"
