#!/usr/bin/env bash
# Prepare scripts/gpu_run.sh on the development machine (needs the package registry and the store):
#
#   bash scripts/gpu_prepare.sh [STORE]      # STORE: default stores/faces64-z13 (README's prepare line)
#
# - .whl/: what the GPU machine's image lacks for training (diffusers and importlib_metadata),
#   as wheels for its Python 3.12 (device README); facegen itself travels as source (src/).
# - .devdata/train64.zip: the training split of STORE as WebP (scripts/pack_store.py) at the
#   highest quality (90, 85, 80, ...) that fits what is left of the 64 MiB that travels after the
#   tracked files (a committed checkpoint pack included) and the wheels; the raw store (12 KB a
#   face) is far over it. The holdout stays here: the evaluation reference is exact only here.
# Both folders are ignored by git (.git/info/exclude) and named in the device tool's `carry`.
# It ends by printing what would travel, against the 64 MiB limit.
set -euo pipefail
STORE=${1:-stores/faces64-z13}
PY=${PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.devdata/' .git/info/exclude 2>/dev/null || echo '/.devdata/' >> .git/info/exclude
diffusers=$($PY -c "import diffusers; print(diffusers.__version__)")
metadata=$($PY -c "import importlib.metadata as m; print(m.version('importlib_metadata'))")
rm -rf .whl && mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "diffusers==$diffusers" "importlib_metadata==$metadata"
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
wheels=$(du -cb .whl | tail -1 | cut -f1)
# Room for the checkpoint pack a window brings back is kept even before one is committed, so the
# faces get the same quality (and store hash) in every window and the pack continues on them.
pack=0
PRESET=${PRESET:-stylegan-ffhq64-gpu}   # scripts/gpu_run.sh's flagship
[ -f "packs/$PRESET/checkpoint-pack.json" ] || pack=$((20 << 20))
left=$($PY -c "print(round(64 - ($tracked + $wheels + $pack) / 2**20 - 1.5, 1))")  # 1.5 MiB spare for untracked files
echo "tracked $((tracked >> 20)) MiB + wheels $((wheels >> 20)) MiB: $left MiB left for the faces"
if [ ! -f .devdata/train64.zip ]; then
    rm -rf .devdata/train64 && mkdir -p .devdata
    $PY scripts/pack_store.py "$STORE" --split train --format webp --fit-mib "$left" --out .devdata/train64
    (cd .devdata && $PY -m zipfile -c train64.zip train64 && rm -rf train64)
fi
faces=$(du -b .devdata/train64.zip | cut -f1)
echo "travels: $(( (tracked + wheels + faces) >> 20 )) MiB of 64 (tracked, .whl, .devdata/train64.zip)"
