"""Kernel Inception Distance (Binkowski et al. 2018) on feature arrays: pure numpy.

KID is the unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (as in stylegan2-ada and
clean-fid). Unlike FID it has no bias at small sample counts, so it is the metric to
use below 2,048 samples.
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x.y / d + 1)^3 for rows of x (n, d) and y (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


# Sets up to this size get their whole kernel matrices computed once (3 x 2,500^2 float64: 150 MB),
# and each subset reads its block from them: the same numbers as computing every subset's
# kernels afresh, about 40x faster at 500 vs 500 (what training-time evaluation runs).
FULL_KERNELS_MAX = 2500


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between samples x (m, d) and y (n, d): the kernel diagonals
    (a point compared with itself) are left out of the within-set means."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def mmd2_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """mmd2_unbiased from the three kernel matrices (m, m), (n, n), (m, n)."""
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def subset_size(n_a: int, n_b: int, max_subset_size: int = 1000) -> int:
    """min(n_a, n_b, max_subset_size) as in stylegan2-ada and clean-fid, except that a subset
    never spans the whole smaller set (every subset would be the same and the std 0): then
    half of it."""
    size = min(n_a, n_b, max_subset_size)
    return size if size < min(n_a, n_b) else max(2, size // 2)


def kernel_distance(
    features_a: np.ndarray,      # (n_a, d)
    features_b: np.ndarray,      # (n_b, d)
    subsets: int = 100,          # random subsets averaged
    max_subset_size: int = 1000,  # subset size = min(n_a, n_b, this)
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subsets."""
    size = subset_size(len(features_a), len(features_b), max_subset_size)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(features_a)} and {len(features_b)}")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(features_a), size, replace=False), rng.choice(len(features_b), size, replace=False))
             for _ in range(subsets)]
    if max(len(features_a), len(features_b)) <= FULL_KERNELS_MAX:
        a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
        k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
        values = [mmd2_from_kernels(k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)]) for i, j in draws]
    else:
        values = [mmd2_unbiased(features_a[i], features_b[j]) for i, j in draws]
    return float(np.mean(values)), float(np.std(values))
