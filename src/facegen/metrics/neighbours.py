"""Euclidean nearest-neighbour searches shared by precision/recall and the memorization audit.

Computed in row blocks so that 10k x 10k comparisons never hold more than one block of
distances (block x m floats) in memory.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK_ROWS = 1024


def compute_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of a (n, d) and b (m, d) -> (n, m), float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))  # clip: round-off can make the expansion negative


def distance_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows of a, distances of those rows to all of b) block by block."""
    for start in range(0, len(a), BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, len(a)))
        yield rows, compute_distances(a[rows], b)


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row of x -> (n,)."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {len(x)}")
    radii = np.empty(len(x))
    for rows, d in distance_blocks(x, x):
        # index k, not k-1: the 0-th smallest is the point itself (distance 0)
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def nearest_neighbours(queries: np.ndarray, pool: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `pool` for each query, sorted: distances (n, k), indices (n, k)."""
    k = min(k, len(pool))
    dist, idx = np.empty((len(queries), k)), np.empty((len(queries), k), dtype=np.int64)
    for rows, d in distance_blocks(queries, pool):
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(k), (len(d), 1))
        part_d = np.take_along_axis(d, part, axis=1)
        order = np.argsort(part_d, axis=1)
        idx[rows], dist[rows] = np.take_along_axis(part, order, axis=1), np.take_along_axis(part_d, order, axis=1)
    return dist, idx
