"""Faces held on the training device: the training split copied there once as uint8, each
micro-batch one gather by an index tensor.

    faces = device_faces(store, device, budget=0.25, hflip=True)  # None when the split does not fit
    for images in DeviceBatches(faces, stream, micro_batch=64, start=position): ...

With flips on, the device holds each face and its mirror image (rows N..2N-1 are rows 0..N-1
flipped), so a flipped face is a row like any other and a batch is still one gather: a flip
in batch (torch.where over the batch) cost twice the gather and conversion together on the CPU.

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
from facegen.utils import from_uint8_channels_first

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


def device_faces(store: FaceStore, device: torch.device, budget: float, hflip: bool = True, channels_last: bool = False,
                 split: str = "train") -> torch.Tensor | None:
    """The split as one uint8 (N, 3, H, W) tensor on `device`, followed by its N mirror images
    when `hflip`, or None when that would take more than `budget` (a fraction) of the device's
    memory (then the DataLoader streams the split from disk). Held in the memory format the
    nets take, so a batch needs no transposing copy."""
    rows = store.split(split)
    n, copies = len(rows), 2 if hflip else 1
    if budget <= 0 or copies * int(np.prod(rows.shape)) > budget * memory_of(device):
        return None
    faces = torch.empty((copies * n, *rows.shape[1:]), dtype=torch.uint8, device=device)  # (2N, H, W, 3) as stored
    step = max(1, (64 << 20) // max(1, int(np.prod(rows.shape[1:]))))  # 64 MB per copy: never the whole split in host memory twice
    for start in range(0, n, step):
        chunk = faces[start:min(start + step, n)]
        chunk.copy_(torch.from_numpy(np.array(rows[start:start + step])))
        if hflip:
            faces[n + start:n + start + len(chunk)] = chunk.flip(2)
    faces = faces.permute(0, 3, 1, 2)  # (2N, 3, H, W), channels_last in memory
    return faces if channels_last else faces.contiguous()


class DeviceBatches:
    """Endless micro-batches (m, 3, H, W) in [-1, 1] of process `rank` of `world_size`, from
    stream position `start` on: the positions StreamBatches gives the same process. `faces` is
    what device_faces returns (with mirror images when the stream flips)."""

    def __init__(self, faces: torch.Tensor, stream: FaceStream, micro_batch: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.faces, self.stream, self.micro_batch = faces, stream, micro_batch
        self.start, self.rank, self.world_size = start, rank, world_size
        # index_select of a channels_last tensor returns a contiguous one: gather the (N, H, W, 3) rows instead
        self.channels_last = faces.dim() == 4 and not faces.is_contiguous() and faces.is_contiguous(memory_format=torch.channels_last)

    def __iter__(self) -> Iterator[torch.Tensor]:
        m, w = self.micro_batch, self.world_size
        per_chunk = max(1, CHUNK_IMAGES // m)  # micro-batches of this process per copy of rows
        position = self.start + self.rank * m
        while True:
            rows = self._chunk(position, per_chunk)
            for k in range(per_chunk):
                yield self._batch(rows[k * m:(k + 1) * m])
            position += per_chunk * m * w

    def _chunk(self, position: int, count: int) -> torch.Tensor:
        """Rows (mirror images: + N) of this process's next `count` micro-batches, on the device in one copy."""
        m, w = self.micro_batch, self.world_size
        parts = [self.stream.positions(position + k * m * w, m) for k in range(count)] if w > 1 else \
            [self.stream.positions(position, m * count)]
        rows = np.concatenate([r for r, _ in parts])
        flips = np.concatenate([f for _, f in parts])
        if flips.any() and len(self.faces) == self.stream.num_items:
            raise ValueError("the stream flips faces but the device holds no mirror images: device_faces(..., hflip=True)")
        rows = torch.from_numpy(rows + flips * self.stream.num_items)  # a mirror image is row i + N
        if self.faces.device.type == "cuda":
            rows = rows.pin_memory()  # an asynchronous copy: the host does not wait for the device
        return rows.to(self.faces.device, non_blocking=True)

    def _batch(self, rows: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = self.faces.permute(0, 2, 3, 1).index_select(0, rows).permute(0, 3, 1, 2)  # one gather, channels_last
        else:
            x = self.faces.index_select(0, rows)  # one gather, (m, 3, H, W) contiguous
        return from_uint8_channels_first(x)  # in the same memory format
