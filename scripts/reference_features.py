"""Inception features of held-out faces for `facegen demo` (maintainers only).

    python scripts/reference_features.py stores/faces64-z13 --n 1000 --out reference-features.npz

Writes {"features": (n, 2048) float16, "what", "network", "resize", "rows"}: n faces evenly
spaced over the store's holdout (`FaceStore.subset_rows`; its first n would all come from the
first source of a merged store), through the same network and resize as `facegen eval`
(cached per store).
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
    what = (f"Inception-v3 (FID network) pool features of {len(features):,} of the {len(store.split('holdout')):,} "
            f"held-out faces of {args.store.as_posix()}, evenly spaced over them ({source_labels(store)}; "
            f"store hash {store.content_hash[:12]})")
    np.savez(args.out, features=features.astype(np.float16), what=what, network=network_hash(), resize=resize_mode(),
             rows="spread")
    print(f"wrote {args.out}: {what}")


def source_labels(store: FaceStore) -> str:
    """The photo sources of a store, as its manifest names them."""
    source = store.manifest.get("source", {})
    if not isinstance(source, dict):  # a store written by hand (write_store) may name it in a word
        return str(source)
    return " + ".join(source.get("sources", {})) or Path(source.get("location", "?")).name


if __name__ == "__main__":
    main()
