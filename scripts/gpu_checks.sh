#!/usr/bin/env bash
# Every check that needs a GPU, in one run that fits one short lease of a GPU machine (GPU_CHECKS_BUDGET, 570 s
# by default: a device call's 600 s less a margin), most important first, each step bounded in time:
#   1. pytest -m gpu                 one bf16 step of every method, telemetry, fp16 scaler, GPU ranking = CPU
#   2. bench/gpu.sh                  bf16 vs fp32 clips/s and peak memory, data-wait (bench/RESULTS.md)
#   3. bench/bench_retrieval.py      ranking on the GPU vs bare torch and vs sklearn at N = 10k, and 100k
#   4. bench/bench_augment.py        batched augmentation on the GPU vs the per-sample worker path
#   5. vidssl plan --gpu-mem 80      per preset: activation memory measured on the GPU, the batch that fits
# Each step's output goes to OUTDIR/NAME.log; OUTDIR/summary.md gathers the tables and ratios.
#
#   bash scripts/gpu_checks.sh [OUTDIR]                     # on the GPU machine, from the repository root
#   GPU_CHECKS_DEVICE=cpu bash scripts/gpu_checks.sh /tmp/o  # the same steps, small, on a CPU (checks the script)
#
# The machine needs Python with PyTorch (CUDA) and the packages scripts/gpu_wheels.sh fetches into .whl/ where
# PyPI is reachable; they are installed from there, offline, into a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-checks}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
device=${GPU_CHECKS_DEVICE:-cuda}
py=${PYTHON:-python3}
start=$(date +%s)

# Install the carried wheels only where they are needed (a machine set up with scripts/install.sh has them).
if ! "$py" -c "import pydantic, simplejpeg" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/vidssl-gpu-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "gpu_checks: could not install .whl/*.whl into $site"; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true \
  DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false

summary=$out/summary.md
{
  echo "# GPU checks, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%F)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  echo
} >"$summary" 2>&1
cat "$summary"

# step NAME SECONDS COMMAND...: run it with a time limit, log it, note its exit status and wall time. The whole
# run keeps within GPU_CHECKS_BUDGET seconds (a device call is cut at 600): a step gets what is left of it, less
# a margin for the summary, and one with under 10 s left is skipped.
budget=${GPU_CHECKS_BUDGET:-570}
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  local left=$((budget - (t0 - start) - 10))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped, the run's budget of $budget s is spent"
    echo "- $name: skipped (budget spent)" >>"$summary"
    : >"$out/$name.log"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$? took=$(($(date +%s) - t0))
  tail -n 40 "$out/$name.log"
  echo "== $name: exit $rc after $took s"
  echo "- $name: exit $rc, $took s" >>"$summary"
}

if [ "$device" = cpu ]; then  # a small run of the same steps on a CPU: checks the script, measures nothing
  gpu_args=(--device cpu --tiny --steps 2 --videos 16 --batch 4 --repeat 1 --workers 1)
  ret_args=(--device cpu --n 2000 --queries 500 --big 5000 --repeats 1)
  aug_args=(--device cpu --seconds 0.2 --scale demo --methods iic,be)
  presets=(iic_r3d_ucf101)
else
  gpu_args=()
  ret_args=(--device cuda --n 10000 --queries 4000 --dim 512 --big 100000)
  aug_args=(--device cuda --seconds 1 --scale both)
  presets=(iic_r3d_ucf101 dualvar_r21d_ucf101 be_i3d_ucf101 mlfo_r3d18_ucf101)
fi

step pytest_gpu 90 "$py" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -o addopts="-ra" \
  --timeout 100
GPU_BENCH_TIMEOUT=300 step gpu_bench 310 bash bench/gpu.sh "${gpu_args[@]}"
step retrieval 75 "$py" bench/bench_retrieval.py "${ret_args[@]}"
step augment 50 "$py" bench/bench_augment.py "${aug_args[@]}"
for p in "${presets[@]}"; do
  step "plan_$p" 40 "$py" -m vidssl.cli plan --preset "$p" --gpu-mem 80 --device "$device"
done

{
  echo
  echo "## bench/gpu.sh"
  sed -n '/^vidssl GPU benchmark/,$p' "$out/gpu_bench.log"
  grep -E '^  [a-z0-9]+ [a-z]+: fp32' "$out/gpu_bench.log" | sed 's/^/    /'
  echo
  echo "## retrieval"
  grep -E '^(gallery|  [a-z]|same|ours|faiss|speed)' "$out/retrieval.log"
  echo
  echo "## augmentation"
  grep -E '^(device|\|)' "$out/augment.log"
  echo
  echo "## plan --gpu-mem 80"
  for p in "${presets[@]}"; do
    echo "### $p"
    grep -E '^(method|parameters|static|activation|one step|global batch|optimiser|smaller)' "$out/plan_$p.log"
  done
  echo
  echo "## pytest -m gpu"
  tail -n 15 "$out/pytest_gpu.log"
  echo
  echo "all steps: $(($(date +%s) - start)) s"
} >>"$summary"
echo
cat "$summary"
