"""The face store: what `facegen data prepare` writes and everything else reads.

Layout of a store folder:
    manifest.json       source, crop, size, counts, split sizes, content hash, version,
                        skipped files with their reason, duplicates
    <split>.npy         uint8 array (N, H, W, 3) per split, memory-mapped on read;
                        splits are "train" plus, when asked for, "holdout" (--holdout K)
                        or the official CelebA "val"/"test"
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from facegen.utils import FacegenError

MANIFEST = "manifest.json"


class FaceStore:
    """Read-only view of a prepared face store. Arrays are memory-mapped, never loaded whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise FacegenError(f"{self.path}: no such face store; create one with `facegen data prepare SRC --out {self.path}`")
        if not manifest.is_file():
            raise FacegenError(f"{self.path}: not a face store (no {MANIFEST}); create one with `facegen data prepare`")
        try:
            self.manifest: dict = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise FacegenError(f"{manifest}: unreadable manifest ({e}); prepare the store again with --overwrite") from None

    @property
    def resolution(self) -> int:
        return int(self.manifest["size"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def content_hash(self) -> str:
        """Hash of the pixels of every split (stable across machines for the same inputs)."""
        return self.manifest["content_hash"]

    def split(self, name: str = "train") -> np.ndarray:
        """The uint8 (N, H, W, 3) array of one split, memory-mapped read-only."""
        return self._arrays[name] if name in self._arrays else self._missing(name)

    def __len__(self) -> int:
        return len(self.split("train"))

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for name in self.manifest["splits"]:
            file = self.path / f"{name}.npy"
            if not file.is_file():
                raise FacegenError(f"{file} is missing: the store is incomplete; prepare it again with --overwrite")
            arrays[name] = np.load(file, mmap_mode="r")
        return arrays

    def _missing(self, name: str):
        raise FacegenError(f"{self.path} has no split {name!r}; it has {', '.join(self.splits)}")


def spread_rows(total: int, n: int) -> np.ndarray:
    """n row indices evenly spaced over 0..total-1 (distinct, increasing): a subset of a split that
    samples all of it (a store is in file-name order; a merged store lists its first source first)."""
    return np.floor(np.arange(n) * (total / n)).astype(np.int64)


def content_hash(splits: dict[str, np.ndarray]) -> str:
    """sha256 over split names, shapes and pixels, in split order: same faces -> same hash."""
    import hashlib

    h = hashlib.sha256()
    for name, arr in splits.items():
        h.update(f"{name}:{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def write_store(out: str | Path, splits: dict[str, np.ndarray], manifest: dict, overwrite: bool = False) -> FaceStore:
    """Write arrays + manifest under a temporary name, then rename: never half a store.

    `manifest` gets "splits" (name -> count) and "content_hash" filled in here.
    """
    from facegen.utils import atomic_dir, atomic_write_json

    out = Path(out)
    if out.exists() and not overwrite:
        raise FacegenError(f"{out} already exists; pass --overwrite to replace it")
    manifest = dict(manifest)
    manifest["splits"] = {name: int(len(arr)) for name, arr in splits.items()}
    manifest["content_hash"] = content_hash(splits)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, arr in splits.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.uint8))
        atomic_write_json(tmp / MANIFEST, manifest)
    return FaceStore(out)
