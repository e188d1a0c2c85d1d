"""On-disk cache of feature arrays (reference features, identity embeddings, face checks).

Each entry is one .npy file named by a hash of its key (store content hash, split, count,
extractor, network hash, resize filter): a changed store, network or resize gives a new
entry, never a stale one. Written atomically, so an interrupted run leaves no half file.
Location: $FACEGEN_CACHE, else ~/.cache/facegen.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from facegen.distributed import everyone
from facegen.utils import atomic_write_bytes, atomic_write_json


def cache_dir() -> Path:
    return Path(os.environ.get("FACEGEN_CACHE") or Path.home() / ".cache" / "facegen")


def cached_array(kind: str, key: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored under (kind, key), computing and storing it on a miss."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / f"{kind}-{digest}.npy"
    cached = None
    if path.is_file():
        try:
            cached = np.load(path)
        except (OSError, ValueError):
            pass  # unreadable (e.g. a disk filled up earlier): compute it again
    # Under a launcher all processes compute together (the work may be split across them), so
    # a miss on one (e.g. another machine's cache) is a miss for all; one process: as before.
    if everyone(cached is not None):
        return cached
    array = compute()
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), key)  # what the entry is, for a human
    return array
