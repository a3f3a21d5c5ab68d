#!/usr/bin/env bash
# One command for a fresh machine: install, run the whole pipeline on the embedded dataset with DVC, show results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
[ -d .git ] || git init -q      # DVC tracks the pipeline's state next to git
dvc repro
echo
cat reports/results.md
echo
echo "Browse runs, curves and checkpoints in MLflow:  . .venv/bin/activate && vidssl ui   (http://127.0.0.1:5000)"
echo "Compare every method on the same data (about 2 hours per seed, 3 seeds, on 2 CPU cores):  vidssl methods-report"
