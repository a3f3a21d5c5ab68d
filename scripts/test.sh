#!/usr/bin/env bash
# One command for a fresh machine: install with test extras, run the test suite (CPU; GPU tests skip themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
# Whole test files run side by side on up to 4 processes (the CPUs this process may use; VIDSSL_TEST_PROCS=N
# sets it, 0 runs them in this process); then the 20 slowest tests and the summary line.
procs=${VIDSSL_TEST_PROCS:-$(python -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}
python -m pytest -q -n "$procs" --dist loadfile --no-loadscope-reorder --durations=20 "$@"
