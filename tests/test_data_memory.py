"""Prepare's memory does not grow with the source's files (issue 19, "Face stores at the size
users bring"): the main process keeps the names on disk (data/names.py), a few numbers per file
in numpy arrays, and reads its journal back a line at a time. Seconds, no image decoded."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np

import facegen.data.names as names
import facegen.data.partial as partial
import facegen.data.prepare as prep
import facegen.data.store as store
from facegen.data.prepare import Result, prepare

SIZE = 8  # faces of 192 bytes: the store's pixels are not what is measured here
N = 3000  # files of the small source; the big one has 4N

# The budget: peak RSS within 10% between a 10k and a 100k source, 10% of the 53 MB of
# the 10k run (bench/results/prepare.json) over 90,000 more files: 59 bytes a file. What stays is
# 32 (face count, first row and pixel hash of each file), 8 for the sort that finds duplicates
# and 8 a face for the rows to copy, not all at once; 50 leaves room for what tracemalloc does
# not see (numpy's sort buffer: 4 bytes a file). The list of names alone cost ~90 bytes a file
# before, the whole run ~300 (a list of str, a sorted copy, the files to do, the journal read whole).
BYTES_PER_FILE = 50


def _fake_run(items, task, workers, advance, spill):
    """Decoding without decoding: each file gives one black face and a pixel hash of its own."""
    face = np.zeros((SIZE, SIZE, 3), np.uint8)
    for name, _ in items:
        yield [Result(name, [face], None, hashlib.sha1(name.encode()).hexdigest())], None
        advance(1)


def _source(root, n: int):
    for k in range(4):
        (root / f"part{k}").mkdir(parents=True)
    for i in range(n):
        (root / f"part{i % 4}" / f"{i:07d}.jpg").touch()
    return root


def _peak(src, out) -> int:
    """tracemalloc's peak over a whole prepare of `src` (listing, bookkeeping, planning, writing)."""
    tracemalloc.start()
    try:
        prepare(src, out, size=SIZE, crop="center", holdout=10, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_main_process_memory_does_not_grow_with_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "_run", _fake_run)
    monkeypatch.setattr(partial, "CHECKPOINT_S", 0.01)  # journal lines wait in memory for 10 ms, not 2 s
    # Work done in pieces of a fixed size (names sorted in memory, read from disk, planned) is
    # memory that does not grow with the files; the pieces are made as small against N and 4N
    # as the real ones (tens of thousands) are against millions of files, so that they count as
    # the constant they are, not as a cost per file.
    monkeypatch.setattr(names, "RUN", 500, raising=False)
    monkeypatch.setattr(names, "READ_BYTES", 1 << 12, raising=False)
    monkeypatch.setattr(names, "RUN_READ_BYTES", 1 << 8, raising=False)
    monkeypatch.setattr(prep, "PLAN_FILES", 256, raising=False)
    monkeypatch.setattr(store, "COPY_CHUNK_BYTES", 1 << 14)  # the store's copy buffer (8 MB) would hide the rest
    _peak(_source(tmp_path / "warm", 300), tmp_path / "warm-store")  # imports and first-use caches
    small = _peak(_source(tmp_path / "small", N), tmp_path / "small-store")
    big = _peak(_source(tmp_path / "big", 4 * N), tmp_path / "big-store")
    per_file = (big - small) / (3 * N)
    assert per_file < BYTES_PER_FILE, f"peak memory grows by {per_file:.0f} bytes a file ({small:,} -> {big:,} bytes)"


def test_names_on_disk_read_like_the_sorted_list(monkeypatch):
    """Sorted by merging runs from disk, in blocks, read in pieces: the same as sorted() of a list
    (code point order, duplicates, undecodable names), and found by bisection as in that list."""
    import bisect
    import random

    rnd = random.Random(19)
    monkeypatch.setattr(names, "RUN", 7)
    monkeypatch.setattr(names, "BLOCK", 3)
    monkeypatch.setattr(names, "READ_BYTES", 5)
    monkeypatch.setattr(names, "RUN_READ_BYTES", 3)
    letters = ["a", "b", "/", ".", "-", "0", "é", "€", "\U0001f600", "\udc80", "\ue000", "\n"]
    listed = ["".join(rnd.choices(letters, k=rnd.randint(0, 5))) for _ in range(120)]
    listed += listed[:10]
    want = sorted(listed)
    got = names.Names.sorted(listed)
    assert list(got) == want and len(got) == len(want) and [got[i] for i in range(len(want))] == want
    assert got.sha256() == hashlib.sha256("\n".join(want).encode("utf-8", "surrogatepass")).hexdigest()
    for k in (0, 1, 50, len(want)):
        assert list(got[:k]) == want[:k] and list(got.between(k // 2, k)) == want[k // 2:k]
    for name in set(want) | {"".join(rnd.choices(letters, k=3)) for _ in range(40)}:
        assert got.bisect_left(name) == bisect.bisect_left(want, name) and (name in got) == (name in want)
        assert got[:50].bisect_left(name) == bisect.bisect_left(want[:50], name)
    keep = np.array([rnd.random() < 0.5 for _ in want])
    assert list(got.subset(keep)) == [n for n, k in zip(want, keep) if k]


def test_trim_heap_gives_freed_fragments_back(tmp_path):
    """What prepare calls at each checkpoint: photo-sized buffers freed between live ones stay
    resident until the heap is trimmed (the 100k-photo run's memory crept without it)."""
    import platform
    import subprocess
    import sys

    script = """
import sys
from facegen.utils import trim_heap

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

if not sys.platform.startswith("linux") or not trim_heap():
    print("no-trim"); raise SystemExit
blocks = [bytes(8000) + bytes([i % 256]) for i in range(20000)]  # 160 MB of photo-sized buffers
kept = blocks[::16]  # one in 16 lives on, pinning the heap around the freed ones
del blocks
before = rss_mb()
trim_heap()
print(before - rss_mb())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    if out == "no-trim":  # only glibc has malloc_trim; elsewhere the call must say so, not fail
        assert not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
        return
    assert float(out) > 100, f"trimming gave back only {out} MB of ~150 MB freed"
