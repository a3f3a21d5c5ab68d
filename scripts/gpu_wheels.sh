#!/usr/bin/env bash
# Fetch, into .whl/, the wheels of the packages the GPU checks need that a bare CUDA image with PyTorch lacks
# (the checks import vidssl's config, data and engine: pydantic, simplejpeg). Run it where PyPI is reachable;
# scripts/gpu_checks.sh installs them on the GPU machine without a network. Versions follow this environment's
# (so both machines parse params the same way); PYTHON_VERSION names the GPU machine's Python (default 3.12).
#   bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
for pkg in pydantic pydantic_core annotated_types typing_inspection typing_extensions simplejpeg; do
  spec="$pkg==$(version "$pkg")"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$spec"
done
ls -l .whl
du -sh .whl
