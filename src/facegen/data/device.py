"""Faces held on the training device: the training split copied there once as uint8, each
micro-batch one gather by an index tensor, flips applied in batch.

    faces = device_faces(store, device, budget=0.25)      # None when the split does not fit
    for images in DeviceBatches(faces, stream, micro_batch=64, start=position): ...

The batches are exactly what the DataLoader path (data/loader.py + data/stream.py) yields:
the same faces, in the same order, with the same flips, from any stream position, for any
process of any number of processes, from sharded stores too (tests/test_data_device.py
compares both batch by batch). What changes is the cost: no Python per face, no worker
processes, and on a GPU no host-to-device copy of pixels and no host sync per batch: the
stream's rows are computed per chunk of micro-batches in arrays and sent to the device in one
copy, then sliced there.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from facegen.data.store import FaceStore
from facegen.data.stream import FaceStream

CHUNK_IMAGES = 1 << 16  # stream positions whose rows go to the device in one copy


def memory_of(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's total memory, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def device_faces(store: FaceStore, device: torch.device, budget: float, split: str = "train") -> torch.Tensor | None:
    """The split as one uint8 (N, H, W, 3) tensor on `device`, or None when it would take more
    than `budget` (a fraction) of the device's memory (then the DataLoader streams it from disk)."""
    rows = store.split(split)
    size = int(np.prod(rows.shape))
    if budget <= 0 or size > budget * memory_of(device):
        return None
    faces = torch.empty(rows.shape, dtype=torch.uint8, device=device)
    step = max(1, (64 << 20) // max(1, int(np.prod(rows.shape[1:]))))  # 64 MB per copy: never the whole split in host memory twice
    for start in range(0, len(rows), step):
        faces[start:start + step].copy_(torch.from_numpy(np.array(rows[start:start + step])))
    return faces


class DeviceBatches:
    """Endless micro-batches (m, 3, H, W) in [-1, 1] of process `rank` of `world_size`, from
    stream position `start` on: the positions StreamBatches gives the same process."""

    def __init__(self, faces: torch.Tensor, stream: FaceStream, micro_batch: int, start: int = 0, rank: int = 0,
                 world_size: int = 1, memory_format: torch.memory_format = torch.contiguous_format):
        self.faces, self.stream, self.micro_batch = faces, stream, micro_batch
        self.start, self.rank, self.world_size, self.memory_format = start, rank, world_size, memory_format

    def __iter__(self) -> Iterator[torch.Tensor]:
        m, w = self.micro_batch, self.world_size
        per_chunk = max(1, CHUNK_IMAGES // m)  # micro-batches of this process per copy of rows
        position = self.start + self.rank * m
        while True:
            rows, flips = self._chunk(position, per_chunk)
            for k in range(per_chunk):
                yield self._batch(rows[k * m:(k + 1) * m], flips[k * m:(k + 1) * m])
            position += per_chunk * m * w

    def _chunk(self, position: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and flips of this process's next `count` micro-batches, on the device in one copy."""
        m, w = self.micro_batch, self.world_size
        parts = [self.stream.positions(position + k * m * w, m) for k in range(count)] if w > 1 else \
            [self.stream.positions(position, m * count)]
        rows = np.concatenate([r for r, _ in parts])
        flips = np.concatenate([f for _, f in parts])
        both = torch.from_numpy(np.stack([rows, flips.astype(np.int64)]))
        if self.faces.device.type == "cuda":
            both = both.pin_memory()  # an asynchronous copy: the host does not wait for the device
        both = both.to(self.faces.device, non_blocking=True)
        return both[0], both[1].bool()

    def _batch(self, rows: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        x = self.faces.index_select(0, rows)                      # (m, H, W, 3) uint8: one gather
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(2), x)     # mirror left-right, in batch
        x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)    # utils.from_uint8, batched
        return x.contiguous(memory_format=self.memory_format)
