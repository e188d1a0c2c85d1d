"""The order in which training sees faces: deterministic, resumable, sharded by process.

Training reads one endless stream of (index, flip) items. Item p of the stream is
    epoch e = p // N, item perm_e[p % N], flipped if flips_e[p % N]
where perm_e and flips_e come from a generator seeded with (seed, e). Which face lands at
which position therefore depends only on the seed, never on the number of processes, the
DataLoader workers or an interruption: a resumed run restarts the stream at the saved
position and sees exactly the faces it would have seen.

Process r of W, loading micro-batches of m images, takes positions
    start + k*m*W + r*m ... + m - 1     for its k-th micro-batch,
so the W processes together read consecutive blocks of the stream.

A store in S shards (consecutive row ranges, data/store.py) gets a stream that takes turns:
positions come in blocks of B = (images per micro-step, all processes) / S, block j from
shard j % S, and each shard has its own endless permuted stream (seeded with (seed, epoch,
shard)). The order still depends only on the seed, S and the batch, never on W; and when S is
a multiple of W (or W of S) process r's micro-batches fall in its own S/W shards (or in shard
r*S//W), so a process never reads the others' shards (docs/scaling.md, "A store for many nodes").
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from facegen.utils import FacegenError


class FaceStream:
    def __init__(self, num_items: int, seed: int, hflip: bool, shards: list[int] | None = None, block: int = 1):
        """shards: rows of each shard (consecutive ranges summing to num_items); block: positions per shard turn."""
        self.num_items, self.seed, self.hflip = num_items, seed, hflip
        self.sizes = list(shards or [num_items])
        if sum(self.sizes) != num_items or min(self.sizes) < 1:
            raise ValueError(f"shard sizes {self.sizes} do not cut {num_items} items into non-empty shards")
        self.starts = np.cumsum([0] + self.sizes[:-1])
        self.block = block
        self._epochs: dict[tuple[int, int], tuple] = {}  # (shard, epoch) -> (permutation, flips); the last few only

    def item(self, position: int) -> tuple[int, bool]:
        indices, flips = self.positions(position, 1)
        return int(indices[0]), bool(flips[0])

    def positions(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (int64) and flips (bool) of stream positions start .. start+count-1, computed per
        epoch in arrays: one permutation lookup per (shard, epoch) the range touches."""
        position = np.arange(start, start + count, dtype=np.int64)
        shard, q = np.zeros(count, dtype=np.int64), position  # q: position in the shard's own stream
        if len(self.sizes) > 1:
            turn, offset = np.divmod(position, self.block)
            shard, q = turn % len(self.sizes), turn // len(self.sizes) * self.block + offset
        sizes = np.asarray(self.sizes, dtype=np.int64)[shard]
        epoch, i = np.divmod(q, sizes)
        rows, flips = np.empty(count, dtype=np.int64), np.empty(count, dtype=bool)
        for s, e in np.unique(np.stack([shard, epoch]), axis=1).T.tolist():
            at = (shard == s) & (epoch == e)
            perm, flip = self._epoch(s, e)
            rows[at] = self.starts[s] + perm[i[at]]
            flips[at] = flip[i[at]]
        return rows, flips

    def _epoch(self, shard: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        key = (shard, epoch)
        if key not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch] if len(self.sizes) == 1 else [self.seed, epoch, shard])
            perm = rng.permutation(self.sizes[shard])
            self._epochs[key] = (perm, rng.integers(0, 2, self.sizes[shard]).astype(bool) & self.hflip)
            for old in [k for k in self._epochs if k[0] == shard and k[1] < epoch - 1]:  # positions arrive in order
                del self._epochs[old]
        return self._epochs[key]


def shard_block(images_per_micro_step: int, shards: list[int]) -> int:
    """B, the positions of one shard turn: the images of one micro-step (all processes) cut into
    one block per shard, so every micro-step reads every shard once."""
    if images_per_micro_step % len(shards):
        raise FacegenError(f"the store has {len(shards)} shards but a micro-step loads {images_per_micro_step} images; "
                           f"use a batch_size / grad_accum that is a multiple of {len(shards)}")
    return images_per_micro_step // len(shards)


class StreamBatches:
    """A DataLoader batch_sampler: the micro-batches of process `rank`, from `start` (a stream position) on."""

    def __init__(self, stream: FaceStream, micro_batch: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.stream, self.micro_batch, self.start, self.rank, self.world_size = stream, micro_batch, start, rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        step = self.micro_batch * self.world_size  # stream positions consumed per micro-batch, all processes
        position = self.start + self.rank * self.micro_batch
        while True:
            rows, flips = self.stream.positions(position, self.micro_batch)
            yield list(zip(rows.tolist(), flips.tolist()))
            position += step


class FlippedFaces(Dataset):
    """Wraps a dataset of (3, H, W) tensors so that an item is addressed by (index, flip)."""

    def __init__(self, faces: Dataset):
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, item: tuple[int, bool]) -> torch.Tensor:
        index, flip = item
        face = self.faces[index]
        return face.flip(-1) if flip else face
