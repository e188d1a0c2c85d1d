#!/usr/bin/env bash
# The issue-17 GAN pilots on a lent GPU (the `device` tool of the development workplace): every
# candidate of docs/results/gan-pilots/candidates.yaml trains side by side on one GPU for the same
# MINUTES on the same faces, then each run (model, grids, metrics; no checkpoints) comes back as
# OUT/NAME.tgz for the evaluation on the development machine, which holds the holdout.
#
# Inputs in the working tree: .devdata/train64.zip (scripts/pack_store.py: the training split of
# stores/faces64-z13 as WebP q90; the raw store is over the tool's 64 MiB transfer limit) and
# .whl/ (diffusers and what it needs, absent from the GPU machine's image).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-pilots-out}; mkdir -p "$OUT"
MINUTES=${MINUTES:-7.5}
CANDIDATES=${CANDIDATES:-docs/results/gan-pilots/candidates.yaml}
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src
fi
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
rm -rf stores/train64 runs/pilots
$PY -m facegen.cli data prepare .devdata/train64.zip --out stores/train64 --size 64 --crop center || exit 1
$PY scripts/pilot.py "$CANDIDATES" --data stores/train64 --out runs/pilots --minutes "$MINUTES" --parallel --smoke 3 \
    --set num_workers=1 mixed_precision=no sample_every=8000 checkpoint_every=1000000 keep_checkpoints=1 log_every=100 \
          sample_seeds=0-63 tensorboard=false ${EXTRA_SET:-}
status=$?
cd runs/pilots
for run in */; do
    name=${run%/}
    case $name in smoke-*) continue ;; esac
    tar czf "$OUT/$name.tgz" --exclude=checkpoints --exclude=tensorboard "$name" "$name.log"
done
cp pilots.json "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $status
} 2>&1 | tee "${OUT}/device.log"
