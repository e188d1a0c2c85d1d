#!/usr/bin/env bash
# Prepare scripts/gpu_run.sh on the development machine (needs the package registry and the store):
#
#   bash scripts/gpu_prepare.sh [STORE]      # STORE: default stores/faces64-z13 (README's prepare line)
#
# - .whl/: what the GPU machine's image lacks for training (diffusers and importlib_metadata),
#   as wheels for its Python 3.12 (device README); facegen itself travels as source (src/).
# - .devdata/train64.zip: the training split of STORE as WebP quality 90 (scripts/pack_store.py);
#   the raw store (12 KB a face) is over the 64 MiB that travels. The holdout stays here: the
#   evaluation reference is exact only on this machine.
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
if [ ! -f .devdata/train64.zip ]; then
    rm -rf .devdata/train64 && mkdir -p .devdata
    $PY scripts/pack_store.py "$STORE" --split train --format webp --quality 90 --out .devdata/train64
    (cd .devdata && $PY -m zipfile -c train64.zip train64 && rm -rf train64)
fi
du -ch .whl .devdata/train64.zip | tail -1
echo "travels with the tree: $(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1) tracked + the above (limit 64 MiB)"
