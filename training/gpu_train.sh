#!/usr/bin/env bash
# The prepared GPU training burst (issue 10, item 5). Here first, with ../shared beside the repository:
#
#     make gpu-train-pack            # CONFIG=training/configs/gpu-rgbn.yaml by default
#
# which packs what the config's training data reads into .gpu/ (git-ignored, under the device tool's
# 64 MiB with the repository) plus the wheels the GPU machine's Python may lack (tifffile, pyyaml,
# safetensors). Then with the device tool, from the repository root:
#
#     run  command: bash training/gpu_train.sh      carry: [".gpu"]      timeout_s: 600
#
# It installs the missing wheels into .gpu/site (nothing system-wide), makes the checkout importable as
# viser_cr, trains the packed config (warm start and limits as the config says: 8 minutes by default)
# and leaves the run under $OUT/run (checkpoints/last.pt, the log, the loss curves). Extra arguments go
# to the trainer: e.g. --set train.max_minutes=4, or to try it on a CPU first:
#     bash training/gpu_train.sh --set train.device=cpu --set train.steps=2 --set train.batch_size=2 --set train.num_workers=0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
PACK=${PACK:-.gpu}
ROOT=$PWD
if [ ! -f "$PACK/config.yaml" ]; then
  echo "no $PACK/config.yaml: run 'make gpu-train-pack' here first and carry $PACK" >&2
  exit 2
fi
mkdir -p "$PACK/pkg"
ln -sfn "$ROOT" "$PACK/pkg/viser_cr"
export PYTHONPATH="$ROOT/$PACK/pkg:$ROOT/$PACK/site${PYTHONPATH:+:$PYTHONPATH}"
missing=$("$PY" -c "import importlib.util as u; print(' '.join(p for m, p in (('yaml', 'pyyaml'), ('tifffile', 'tifffile'), ('safetensors', 'safetensors')) if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
  echo "installing $missing from $PACK/wheels into $PACK/site"
  "$PY" -m pip install -q --no-index --no-deps --find-links "$PACK/wheels" --target "$PACK/site" $missing
fi
"$PY" -c "import numpy, torch, viser_cr.training.train; print('numpy', numpy.__version__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
mkdir -p "$OUT/run"
"$PY" -m viser_cr.training.train --config "$PACK/config.yaml" --output-dir "$OUT/run" "$@" 2>&1 | tee "$OUT/run/train.log"
# bring back one checkpoint (about 18 MB with the optimizer state): last.pt
find "$OUT/run/checkpoints" -name '*.pt' ! -name last.pt -delete
ls -la "$OUT/run/checkpoints"
