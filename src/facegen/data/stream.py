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
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset


class FaceStream:
    def __init__(self, num_items: int, seed: int, hflip: bool):
        self.num_items, self.seed, self.hflip = num_items, seed, hflip
        self._epoch, self._perm, self._flips = -1, None, None

    def item(self, position: int) -> tuple[int, bool]:
        epoch, i = divmod(position, self.num_items)
        if epoch != self._epoch:  # one permutation per epoch, cached: positions arrive in order
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.num_items)
            self._flips = rng.integers(0, 2, self.num_items).astype(bool) & self.hflip
            self._epoch = epoch
        return int(self._perm[i]), bool(self._flips[i])


class StreamBatches:
    """A DataLoader batch_sampler: the micro-batches of process `rank`, from `start` (a stream position) on."""

    def __init__(self, stream: FaceStream, micro_batch: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.stream, self.micro_batch, self.start, self.rank, self.world_size = stream, micro_batch, start, rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        step = self.micro_batch * self.world_size  # stream positions consumed per micro-batch, all processes
        position = self.start + self.rank * self.micro_batch
        while True:
            yield [self.stream.item(p) for p in range(position, position + self.micro_batch)]
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
