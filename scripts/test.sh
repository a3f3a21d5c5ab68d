#!/usr/bin/env bash
# One command for a fresh machine: install with test extras, run the test suite (CPU; GPU tests skip themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
python -m pytest -q --durations=20 "$@"   # the 20 slowest tests, then the summary line
