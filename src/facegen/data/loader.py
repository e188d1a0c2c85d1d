"""Torch loading of a face store: memory-mapped uint8 -> float32 (3, H, W) in [-1, 1].

The dataset is index-based and holds only the store path until first use, so it pickles
cheaply into DataLoader workers and each worker opens its own memory map (no shared file
handle across fork). A DistributedSampler only needs `len` and integer indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facegen.data.store import FaceStore
from facegen.utils import from_uint8


class FaceDataset(Dataset):
    """Faces of one split of a store, optionally flipped left-right at random."""

    num_channels = 3  # always RGB: prepare converts every photo to 3 channels
    label_dim = 0  # unconditional: no labels

    def __init__(self, store: FaceStore | str | Path, split: str = "train", hflip: bool = False):
        self.store_path = Path(store.path if isinstance(store, FaceStore) else store)
        self.split = split
        self.hflip = hflip  # flip each face with probability 1/2 (torch RNG: seeded per worker)
        store = store if isinstance(store, FaceStore) else FaceStore(self.store_path)
        shape = store.split(split).shape  # raises FacegenError for a missing split
        self._len, self.resolution = int(shape[0]), int(shape[1])
        self._pixels: np.ndarray | None = None  # opened lazily, once per process

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> torch.Tensor:
        face = self._array()[index]  # (h, w, 3) uint8, read from the memory map
        if self.hflip and torch.rand(()) < 0.5:
            face = face[:, ::-1]
        return from_uint8(face)  # (3, h, w), copied out of the read-only map

    def _array(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = FaceStore(self.store_path).split(self.split)
        return self._pixels

    def __getstate__(self) -> dict:
        # Never ship an open memory map to a worker: each process maps the file itself.
        state = dict(self.__dict__)
        state["_pixels"] = None
        return state
