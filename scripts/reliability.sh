#!/usr/bin/env bash
# Inject the faults of tests/faults (SIGKILL of every long stage, and of dvc repro itself) and write
# docs/reliability.md from what happened. Takes a few minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
VIDSSL_RELIABILITY_MD="$PWD/docs/reliability.md" python -m pytest -q tests/faults "$@"
