"""The sorted file names of a source, kept on disk: memory that does not grow with the files.

A list of a million names as Python strings costs about 80 MB (and a sorted copy as much
again); prepare's main process held that list for the whole run, and its decoding workers
inherited it when the pool forked. `Names` keeps the names in an unlinked temporary file,
NUL-terminated UTF-8, and in memory only the byte offset and the first name (as bytes, in one
buffer) of every BLOCK-th name: well under a byte a name. It reads like a sorted list: len,
iteration, names[i], names[:k], `name in names`, index(). `Names.sorted` sorts any iterable
of names (as sorted() would, by code point) in runs of RUN names merged from disk.

No Python object lives per name or per block: a few long-lived objects scattered among
millions of short-lived strings would keep the allocator's pages from going back to the
system (the peak RSS would keep what the sort used).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import tempfile
from array import array
from itertools import compress, islice
from typing import Iterable, Iterator

import numpy as np

BLOCK = 128  # names per block: one offset and one first name of each kept in memory
RUN = 1 << 14  # names sorted in memory at a time (about 1.3 MB of strings, whatever the source's size)
READ_BYTES = 1 << 16  # read at a time when iterating over the names
RUN_READ_BYTES = 1 << 12  # read from each run while merging: about 4x this in memory per run of RUN names
_CODEC = ("utf-8", "surrogatepass")  # any str (even undecodable file names) round-trips; its bytes sort as the str


class Names:
    """Sorted file names in a temporary file (see the module's docstring)."""

    def __init__(self, file, count: int, offsets: np.ndarray, firsts: bytes, first_ends: np.ndarray, end: int):
        """offsets: of each block in `file` and its end; firsts: the blocks' first names, encoded, back
        to back, ending at first_ends; end: where the count-th name ends in `file`."""
        self._file, self._count, self._offsets, self._end = file, count, offsets, end
        self._firsts, self._first_ends = firsts, first_ends
        self._cached: tuple[int, list[str]] = (-1, [])  # the last block read: lookups come in runs

    # ---- building ------------------------------------------------------------------------------

    @classmethod
    def of_sorted(cls, names: Iterable[str]) -> Names:
        """Names already in order (a filtered or prefixed sorted list, row numbers)."""
        writer = _Writer()
        for name in names:
            writer.add(name)
        return writer.finish()

    @classmethod
    def sorted(cls, names: Iterable[str]) -> Names:
        """Names in any order, sorted as sorted(names) would (duplicates kept)."""
        runs_file, runs, names = tempfile.TemporaryFile(), [], iter(names)
        with runs_file:
            while True:
                run = sorted(islice(names, RUN))
                if not run:
                    break
                if not runs and len(run) < RUN:  # a small source: one run, no merge
                    return cls.of_sorted(run)
                start, buffer = runs_file.tell(), bytearray()
                for name in run:
                    buffer += _encode(name)
                runs_file.write(buffer)
                runs.append((start, runs_file.tell()))
                del run, buffer
            runs_file.flush()
            fd = runs_file.fileno()
            return cls.of_sorted(heapq.merge(*(_read_run(fd, start, end) for start, end in runs)))

    # ---- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return self.between(0, self._count)

    def between(self, lo: int, hi: int) -> Iterator[str]:
        """names[lo:hi], one at a time, read in large pieces."""
        lo, hi = max(lo, 0), min(hi, self._count)
        if lo >= hi:
            return
        block = lo // BLOCK
        position, skip, left = int(self._offsets[block]), lo - block * BLOCK, hi - lo
        fd, tail = self._file.fileno(), b""
        while left:
            data = os.pread(fd, min(READ_BYTES, self._end - position), position)
            if not data:
                raise OSError("the names file ended early")
            position += len(data)
            pieces = (tail + data).split(b"\0")
            tail = pieces.pop()
            if skip:
                dropped = min(skip, len(pieces))
                pieces, skip = pieces[dropped:], skip - dropped
            for piece in pieces[:left]:
                yield piece.decode(*_CODEC)
            left -= min(left, len(pieces))

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if start == 0 and step == 1:
                return self.prefix(stop)
            return Names.of_sorted(islice(self, start, stop, step))
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise IndexError(f"name {index} of {self._count}")
        return self._block(i // BLOCK)[i % BLOCK]

    def prefix(self, k: int) -> Names:
        """The first k names, sharing this file (nothing copied)."""
        k = max(0, min(k, self._count))
        if k == self._count:
            return self
        if k == 0:
            return Names(self._file, 0, self._offsets[:1].copy(), b"", self._first_ends[:0].copy(), 0)
        blocks = -(-k // BLOCK)  # the last one holds the k-th name
        in_last = self._block(blocks - 1)[: k - (blocks - 1) * BLOCK]
        end = int(self._offsets[blocks - 1]) + sum(len(_encode(n)) for n in in_last)
        first_ends = self._first_ends[:blocks].copy()
        return Names(self._file, k, self._offsets[: blocks + 1].copy(), self._firsts[: int(first_ends[-1])], first_ends, end)

    def subset(self, keep: np.ndarray) -> Names:
        """The names where `keep` (a bool per name) is true, in a file of their own."""
        if len(keep) != self._count:
            raise ValueError(f"{len(keep)} flags for {self._count} names")
        return Names.of_sorted(compress(self, keep))

    def bisect_left(self, name: str) -> int:
        """Where `name` would go: the first rank whose name is >= name."""
        if not self._count:
            return 0
        block, names = self._cached
        if block >= 0 and names and names[0] < name <= names[-1]:  # in the block read last (names come in order)
            return block * BLOCK + bisect.bisect_left(names, name, 0, min(len(names), self._count - block * BLOCK))
        key, lo, hi = name.encode(*_CODEC), 0, len(self._first_ends)
        while lo < hi:  # the first block whose first name is >= name: bisect_left over the blocks' first names
            mid = (lo + hi) // 2
            start = int(self._first_ends[mid - 1]) if mid else 0
            if self._firsts[start:int(self._first_ends[mid])] < key:
                lo = mid + 1
            else:
                hi = mid
        block = max(lo - 1, 0)  # the last block starting below name
        names = self._block(block)
        return block * BLOCK + bisect.bisect_left(names, name, 0, min(len(names), self._count - block * BLOCK))

    def index(self, name: str) -> int:
        """Rank of `name` (its first one); ValueError when absent."""
        rank = self.bisect_left(name)
        if rank == self._count or self[rank] != name:
            raise ValueError(f"{name!r} is not listed")
        return rank

    def __contains__(self, name) -> bool:
        rank = self.bisect_left(name)
        return rank < self._count and self[rank] == name

    def sha256(self) -> str:
        """sha256 of "\\n".join(names).encode(): the digest a list of the same names gives."""
        h, fd, position, end = hashlib.sha256(), self._file.fileno(), 0, max(self._end - 1, 0)  # no separator after the last
        while position < end:
            data = os.pread(fd, min(READ_BYTES, end - position), position)
            h.update(data.replace(b"\0", b"\n"))
            position += len(data)
        return h.hexdigest()

    def tolist(self) -> list[str]:
        return list(self)

    def __repr__(self) -> str:
        return f"Names({self._count} names)"

    def _block(self, block: int) -> list[str]:
        if self._cached[0] != block:
            start, stop = int(self._offsets[block]), int(self._offsets[block + 1])
            data = os.pread(self._file.fileno(), stop - start, start)
            self._cached = (block, [piece.decode(*_CODEC) for piece in data.split(b"\0")[:-1]])
        return self._cached[1]


def _encode(name: str) -> bytes:
    if "\0" in name:
        raise ValueError(f"file name {name!r} holds a NUL character")
    return name.encode(*_CODEC) + b"\0"


def _read_run(fd: int, position: int, end: int) -> Iterator[str]:
    """The names of one sorted run, read a little at a time."""
    tail = b""
    while position < end:
        data = os.pread(fd, min(RUN_READ_BYTES, end - position), position)
        position += len(data)
        pieces = (tail + data).split(b"\0")
        tail = pieces.pop()
        for piece in pieces:
            yield piece.decode(*_CODEC)


class _Writer:
    """Appends names (in order) to a new temporary file, noting every BLOCK-th one."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.buffer, self.written, self.count = bytearray(), 0, 0
        self.offsets, self.first_ends, self.firsts = array("q"), array("q"), bytearray()

    def add(self, name: str) -> None:
        data = _encode(name)
        if self.count % BLOCK == 0:
            self.offsets.append(self.written + len(self.buffer))
            self.firsts += data[:-1]
            self.first_ends.append(len(self.firsts))
        self.buffer += data
        self.count += 1
        if len(self.buffer) >= READ_BYTES:
            self._flush()

    def _flush(self) -> None:
        self.file.write(self.buffer)
        self.written += len(self.buffer)
        self.buffer = bytearray()

    def finish(self) -> Names:
        self._flush()
        self.file.flush()
        self.offsets.append(self.written)
        offsets, first_ends = np.array(self.offsets, dtype=np.int64), np.array(self.first_ends, dtype=np.int64)
        return Names(self.file, self.count, offsets, bytes(self.firsts), first_ends, self.written)
