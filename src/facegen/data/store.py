"""The face store: what `facegen data prepare` writes and everything else reads.

Layout of a store folder:
    manifest.json       source, crop, size, counts, split sizes, content hash, version,
                        skipped files with their reason, duplicates
    <split>.npy         uint8 array (N, H, W, 3) per split, memory-mapped on read;
                        splits are "train" plus, when asked for, "holdout" (--holdout K)
                        or the official CelebA "val"/"test"

A sharded store (`prepare --shards S`) cuts every split into S consecutive blocks of rows:
    manifest.json                   as above, plus "shards": [{"path", "splits"}, ...]
    shard-00000-of-00004/           a store of its own (manifest.json + <split>.npy): rows
    shard-00001-of-00004/ ...       first_row.. of each split, its own content hash
Readers see one array per split either way (`ShardedRows` maps rows to shard files and
memory-maps a shard on first use), and the content hash is the same as the unsharded
store's with the same faces. A store appears under its name only when complete: prepare
builds it in `.NAME.partial/` and renames it (data/prepare.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from facegen.utils import FacegenError

MANIFEST = "manifest.json"
COPY_CHUNK_BYTES = 8 << 20  # faces copied per read/write when writing a store: one buffer of this size


def partial_dir(store: Path) -> Path:
    """Where prepare builds `store` until it is complete (and keeps its work when interrupted)."""
    return store.with_name(f".{store.name}.partial")


class FaceStore:
    """Read-only view of a prepared face store. Arrays are memory-mapped, never loaded whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file() and partial_dir(self.path).is_dir():
            raise FacegenError(f"{self.path} is not finished (its preparation was interrupted or is still running, "
                               f"work in {partial_dir(self.path).name}); run the same `facegen data prepare` again to finish it")
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

    @property
    def num_shards(self) -> int:
        return len(self.manifest.get("shards", [])) or 1

    def shard_sizes(self, name: str = "train") -> list[int]:
        """Rows of split `name` in each shard, in order (one entry for an unsharded store)."""
        self.split(name)  # a missing split is a user error
        shards = self.manifest.get("shards")
        return [s["splits"].get(name, 0) for s in shards] if shards else [self.manifest["splits"][name]]

    def split(self, name: str = "train") -> np.ndarray | ShardedRows:
        """The uint8 (N, H, W, 3) faces of one split, memory-mapped read-only."""
        return self._arrays[name] if name in self._arrays else self._missing(name)

    def __len__(self) -> int:
        return len(self.split("train"))

    def subset_rows(self, split: str, count: int | None, how: str = "spread", seed: int = 0) -> np.ndarray:
        """Row indices (increasing) of `count` faces of a split drawn from all of it: `subset_rows`."""
        return subset_rows(len(self.split(split)), count, how, seed)

    def subset(self, split: str, count: int | None, how: str = "spread", seed: int = 0) -> np.ndarray | ShardedRows:
        """`count` faces of a split drawn from all of it, never its first rows: a store is in
        file-name order and a merged store lists its first source first. The whole split
        (memory-mapped, nothing read) when count is None or covers it; else the picked faces."""
        faces = self.split(split)
        rows = self.subset_rows(split, count, how, seed)
        return faces if len(rows) == len(faces) else faces[rows]

    @cached_property
    def _arrays(self) -> dict:
        if "shards" in self.manifest:
            face = (self.resolution, self.resolution, 3)  # from the manifest: opening a shard to learn it would map it
            return {name: ShardedRows([self.path / s["path"] / f"{name}.npy" for s in self.manifest["shards"]],
                                      [s["splits"].get(name, 0) for s in self.manifest["shards"]], face)
                    for name in self.manifest["splits"]}
        return {name: open_rows(self.path / f"{name}.npy", n) for name, n in self.manifest["splits"].items()}

    def _missing(self, name: str):
        raise FacegenError(f"{self.path} has no split {name!r}; it has {', '.join(self.splits)}")


def open_rows(file: Path, count: int, face_shape: tuple | None = None) -> np.ndarray:
    """Memory-map one .npy of a store, refusing a missing, short or mis-sized file in one line."""
    if not file.is_file():
        raise FacegenError(f"{file} is missing: the store is incomplete; prepare it again with --overwrite")
    try:
        array = np.load(file, mmap_mode="r")
    except ValueError as e:  # numpy: the header promises more bytes than the file holds
        raise FacegenError(f"{file} is truncated or damaged ({e}); prepare the store again with --overwrite") from None
    if array.ndim != 4 or len(array) != count or (face_shape and array.shape[1:] != face_shape):
        raise FacegenError(f"{file} holds {array.shape}, the manifest says {count} faces; prepare the store again with --overwrite")
    return array


class ShardedRows:
    """One split of a sharded store as one read-only array of faces.

    Row i lives in the shard whose block holds it; a shard's file is memory-mapped the first
    time one of its rows is read, so a process that reads only its shards never maps the others.
    Indexing takes an int, a slice or an array of ints and returns numpy arrays.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files: list[Path], counts: list[int], face_shape: tuple[int, int, int]):
        self.files, self.counts = files, counts
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # shard k: rows starts[k]..starts[k+1]-1
        self.shape = (int(self.starts[-1]), *face_shape)
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._shards:
            self._shards[k] = open_rows(self.files[k], self.counts[k], self.shape[1:])
        return self._shards[k]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            i = int(index) + len(self) if index < 0 else int(index)
            if not 0 <= i < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} faces")
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self._shard(k)[i - self.starts[k]]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            parts = [self._shard(k)[max(start, a) - a:min(stop, b) - a]
                     for k, (a, b) in enumerate(zip(self.starts[:-1], self.starts[1:])) if max(start, a) < min(stop, b)]
            return np.concatenate(parts) if parts else np.empty((0, *self.shape[1:]), np.uint8)
        rows = np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(self))):
            raise IndexError(f"rows must be a 1-d array of indices below {len(self)}")
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(shard_of):
            picked = shard_of == k
            out[picked] = self._shard(int(k))[rows[picked] - self.starts[k]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


SUBSET_KINDS = ("spread", "random")


def subset_rows(total: int, count: int | None, how: str = "spread", seed: int = 0) -> np.ndarray:
    """Indices of `count` of `total` rows, increasing: evenly spaced ("spread") or a seeded random
    choice ("random"); all rows when count is None or at least total. Every subset of a store
    split is taken through this (reference features, face checks, audit pools, the autoencoder's
    latent scale), so none of them is one source of a merged store."""
    if how not in SUBSET_KINDS:
        raise ValueError(f"a subset is spread or random, not {how!r}")
    if count is None or count >= total:
        return np.arange(total, dtype=np.int64)
    if how == "spread":
        return spread_rows(total, count)
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False)).astype(np.int64)


def spread_rows(total: int, n: int) -> np.ndarray:
    """n row indices evenly spaced over 0..total-1 (distinct, increasing): a subset of a split that
    samples all of it (a store is in file-name order; a merged store lists its first source first)."""
    return np.floor(np.arange(n) * (total / n)).astype(np.int64)


def content_hash(splits: dict[str, np.ndarray]) -> str:
    """sha256 over split names, shapes and pixels, in split order: same faces -> same hash."""
    h = hashlib.sha256()
    for name, arr in splits.items():
        h.update(f"{name}:{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def write_store(out: str | Path, splits: dict[str, np.ndarray], manifest: dict, overwrite: bool = False) -> FaceStore:
    """Write in-memory arrays + manifest under a temporary name, then rename: never half a store.

    `manifest` gets "splits" (name -> count) and "content_hash" filled in here. (prepare
    streams faces from its work file instead: write_rows.)
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


def write_rows(folder: Path, faces_file: Path, face_shape: tuple, rows: dict[str, np.ndarray], manifest: dict,
               shards: int = 1, advance: Callable[[int], None] = lambda n: None) -> None:
    """Write a store into the empty `folder`: split `name` is the faces at row indices rows[name]
    of `faces_file` (raw uint8 faces of `face_shape`, back to back), in that order.

    Faces are copied a chunk at a time with plain reads and writes (no memory map: its pages
    would count in this process's memory) and hashed on the way; the files are fsynced and
    the manifests written last. `manifest` gets "splits", "content_hash" (and "shards").
    The .npy files are byte for byte what np.save writes for the same arrays.
    """
    from facegen.utils import atomic_write_json

    face_bytes = int(np.prod(face_shape))
    chunk = max(1, COPY_CHUNK_BYTES // face_bytes)
    buffer = memoryview(bytearray(chunk * face_bytes))  # reused for every chunk: memory stays flat
    cuts = {name: np.array_split(r, shards) for name, r in rows.items()}  # shard k: consecutive rows
    homes = [folder / f"shard-{k:05d}-of-{shards:05d}" for k in range(shards)] if shards > 1 else [folder]
    whole, parts = hashlib.sha256(), [hashlib.sha256() for _ in homes]
    with open(faces_file, "rb", buffering=0) as src:
        for name, r in rows.items():
            whole.update(f"{name}:{(len(r), *face_shape)}".encode())
            for home, part, block in zip(homes, parts, cuts[name]):
                home.mkdir(exist_ok=True)
                part.update(f"{name}:{(len(block), *face_shape)}".encode())
                with open(home / f"{name}.npy", "wb") as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": "|u1", "fortran_order": False, "shape": (len(block), *face_shape)})
                    for i in range(0, len(block), chunk):
                        data = _read_rows(src, block[i:i + chunk], face_bytes, buffer)
                        f.write(data)
                        whole.update(data)
                        part.update(data)
                        advance(len(data) // face_bytes)
                    f.flush()
                    os.fsync(f.fileno())  # on disk before the manifest says the store is complete
    manifest = {**manifest, "splits": {name: len(r) for name, r in rows.items()}, "content_hash": whole.hexdigest()}
    if shards > 1:
        starts = {name: np.cumsum([0] + [len(b) for b in cuts[name]]) for name in rows}
        shard_list = [{"path": home.name, "splits": {name: len(cuts[name][k]) for name in rows}} for k, home in enumerate(homes)]
        for k, (home, part) in enumerate(zip(homes, parts)):
            atomic_write_json(home / MANIFEST, {
                **{key: v for key, v in manifest.items() if key not in ("skipped", "splits", "content_hash")},
                "shard": {"index": k, "of": shards, "first_row": {name: int(starts[name][k]) for name in rows}},
                "splits": shard_list[k]["splits"], "content_hash": part.hexdigest()})
        manifest["shards"] = shard_list
    atomic_write_json(folder / MANIFEST, manifest)


def _read_rows(src, rows: np.ndarray, face_bytes: int, buffer: memoryview) -> memoryview:
    """The bytes of faces `rows` of the raw face file `src`, in that order, read into `buffer`
    (consecutive rows in one read)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # where a run of consecutive rows ends
    filled = 0
    for run in np.split(rows, breaks):
        length = len(run) * face_bytes
        src.seek(int(run[0]) * face_bytes)
        if src.readinto(buffer[filled:filled + length]) != length:
            raise FacegenError(f"{src.name} is shorter than its journal says; run the same `facegen data prepare` again")
        filled += length
    return buffer[:filled]
