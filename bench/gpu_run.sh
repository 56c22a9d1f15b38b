#!/usr/bin/env bash
# The prepared command for a lent GPU machine (its Python has torch + CUDA but maybe not rasterio or
# safetensors, and no network). Here, once: `make gpu-wheels` (about 55 MB of cp312 wheels in
# .whl/gpu-py312, git-ignored). Then, with the device tool, from the repository root:
#
#     run  command: bash bench/gpu_run.sh      carry: [".whl/gpu-py312"]      timeout_s: 540
#
# It installs the missing packages from the carried wheels into .whl/site (nothing system-wide), makes
# the checkout importable as viser_cr, prints nvidia-smi, and runs bench/bench_gpu.py on the
# 10980 x 10980 raster in fp32 and bf16; figures land in $OUT/bench_gpu.{txt,json}. Extra arguments
# go to bench_gpu.py (e.g. --size 128 --device cpu to try the script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
ROOT=$PWD
mkdir -p .whl/pkg
ln -sfn "$ROOT" .whl/pkg/viser_cr
export PYTHONPATH="$ROOT/.whl/pkg:$ROOT/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import rasterio, safetensors" 2>/dev/null; then
  echo "installing rasterio and safetensors from .whl/gpu-py312 into .whl/site"
  "$PY" -m pip install -q --no-index --find-links .whl/gpu-py312 --target .whl/site rasterio safetensors
fi
"$PY" -c "import numpy, rasterio, torch, viser_cr.core.pipeline; print('numpy', numpy.__version__, '| GDAL', \
rasterio.__gdal_version__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
"$PY" bench/bench_gpu.py --workdir "${TMPDIR:-/tmp}" --json "$OUT/bench_gpu.json" "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
