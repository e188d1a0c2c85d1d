"""Inception features of held-out faces for `facegen demo` (maintainers only).

    python scripts/reference_features.py stores/faces64-z13 --n 1000 --out reference-features.npz

Writes {"features": (n, 2048) float16, "what", "network", "resize"}: the first n faces of the
store's holdout, through the same network and resize as `facegen eval` (cached per store).
The demo refuses features whose network or resize differ from its own. Package them with
scripts/package_default_model.py (or copy the file into src/facegen/default/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facegen.data.store import FaceStore
from facegen.metrics.inception import network_hash, resize_mode, store_features


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    store = FaceStore(args.store)
    features = store_features(store, "holdout", args.n)
    source = store.manifest.get("source", {})
    labels = " + ".join(source.get("sources", {})) or Path(source.get("location", "?")).name
    what = (f"Inception-v3 (FID network) pool features of the first {args.n:,} of the {len(store.split('holdout')):,} "
            f"held-out faces of {args.store.as_posix()} ({labels}; store hash {store.content_hash[:12]})")
    np.savez(args.out, features=features.astype(np.float16), what=what, network=network_hash(), resize=resize_mode())
    print(f"wrote {args.out}: {what}")


if __name__ == "__main__":
    main()
