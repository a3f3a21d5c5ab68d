#!/usr/bin/env bash
# How far the quick start's numbers move with the seed, the thread count and the CPU kernels, on this machine.
#
# For each setting NAME:SEED:THREADS[:ISA] it runs the quick start's training stages with the pipeline's params
# (IIC pretraining, fine-tuning from random init and from the pretrained backbone, retrieval) into
# models/spread/NAME/, then prints one table row per setting. THREADS sets OMP_NUM_THREADS and MKL_NUM_THREADS;
# ISA `vector` keeps torch's and oneDNN's choice for this CPU, `scalar` caps them at their plainest code paths
# (ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41): the same arithmetic a CPU without AVX would do.
# The data must exist first (`dvc repro`, or `dvc repro validate`); the data are the same bytes on every machine.
# Each setting takes about as long as the quick start's training (minutes on 2 idle cores); finished settings are
# reused from their folders.
#
#   bash bench/quickstart_spread.sh                                   # the default settings below
#   bash bench/quickstart_spread.sh s632-t1:632:1 s632-scalar:632:2:scalar
set -euo pipefail
cd "$(dirname "$0")/.."
settings=("$@")
[ ${#settings[@]} -gt 0 ] || settings=(s632-t2:632:2 s632-t1:632:1 s1-t2:1:2 s2-t2:2:2 s632-scalar:632:2:scalar)
[ -f data/lists/pretrain.csv ] || { echo "error: data/lists/pretrain.csv not found: run 'dvc repro validate' first" >&2; exit 2; }
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # no spinning on shared cores; the arithmetic is the same

for setting in "${settings[@]}"; do
  IFS=: read -r name seed threads isa <<<"$setting"
  out=models/spread/$name
  [ -f "$out/retrieve.json" ] && continue
  mkdir -p "$out"
  sed -E "s/^seed: [0-9]+/seed: $seed/" params.yaml >"$out/params.yaml"
  env=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads")
  [ "${isa:-vector}" = scalar ] && env+=(ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41)
  start=$(date +%s)
  env "${env[@]}" vidssl pretrain data/lists "$out/pretrain" -p "$out/params.yaml" --state "$out/pretrain_state" \
    --metrics "$out/pretrain.json" --plots "$out/plots" >"$out/log.txt" 2>&1
  env "${env[@]}" vidssl finetune data/lists "$out/finetune" -p "$out/params.yaml" --init "$out/pretrain/backbone.pt" \
    --state "$out/finetune_state" --metrics "$out/finetune.json" --plots "$out/plots" >>"$out/log.txt" 2>&1
  env "${env[@]}" vidssl retrieve data/lists -p "$out/params.yaml" --weights "$out/pretrain/backbone.pt" \
    --features "$out/features" --metrics "$out/retrieve.json" >>"$out/log.txt" 2>&1
  echo $(( $(date +%s) - start )) >"$out/seconds"
done

python - "${settings[@]}" <<'EOF'
import json, platform, sys
from pathlib import Path

import torch

def pct(x):
    return f"{100 * x:.1f}"

cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
print(f"{cpu}, torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
print("| setting | seed | threads | kernels | random init top-1 | fine-tune | IIC top-1 | fine-tune | final loss | s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for setting in sys.argv[1:]:
    name, seed, threads, *isa = setting.split(":")
    d = Path("models/spread") / name
    r, f, p = (json.loads((d / n).read_text()) for n in ("retrieve.json", "finetune.json", "pretrain.json"))
    print(f"| {name} | {seed} | {threads} | {isa[0] if isa else 'vector'} | {pct(r['random_init']['top1'])} | "
          f"{pct(f['random_init']['test_accuracy'])} | {pct(r['pretrained']['top1'])} | "
          f"{pct(f['pretrained']['test_accuracy'])} | {p['final_loss']:.3f} | "
          f"{(d / 'seconds').read_text().strip()} |")
EOF
