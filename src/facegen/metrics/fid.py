"""Frechet Inception Distance (Heusel et al. 2017) on feature arrays: pure numpy, no I/O.

    FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr( (S_a S_b)^{1/2} )

tr((S_a S_b)^{1/2}) is computed by symmetric eigen-decompositions instead of scipy's slow
`sqrtm`: with A = S_a^{1/2} (eigh), S_a S_b is similar to the symmetric PSD matrix
A S_b A, so the trace is the sum of the square roots of that matrix's eigenvalues.
`sqrt_cov` can be computed once per reference set and reused (the bootstrap does that).
The guards follow clean-fid's `frechet_distance`: an eps offset on the diagonals when the
product is not finite, and a refusal when the "imaginary part" (square roots of clearly
negative eigenvalues, which only round-off can produce) is not negligible.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of features (n, d), in float64."""
    x = np.asarray(features, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def sqrt_cov(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix; tiny negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sqrt_sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr((S_a S_b)^{1/2}) from S_a^{1/2} and S_b (both (d, d))."""
    m = sqrt_sigma_a @ sigma_b @ sqrt_sigma_a
    eig = np.linalg.eigvalsh((m + m.T) / 2)  # symmetrise away round-off before eigvalsh
    if not np.all(np.isfinite(eig)):
        raise FloatingPointError("non-finite eigenvalues")
    # clean-fid's imaginary-component guard: sqrt of a negative eigenvalue is imaginary.
    imaginary = np.sqrt(-eig[eig < 0]).sum()
    if imaginary > 1e-3 * max(1.0, float(np.sqrt(np.clip(eig, 0, None)).sum())):
        raise ValueError(f"imaginary component {imaginary:.3g}: covariance matrices are not positive semi-definite")
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b, eps: float = 1e-6, sqrt_sigma_a=None) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

    sqrt_sigma_a: precomputed `sqrt_cov(sigma_a)` (None: computed here).
    """
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    sigma_a, sigma_b = np.atleast_2d(sigma_a).astype(np.float64), np.atleast_2d(sigma_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"shape mismatch: mu {mu_a.shape} vs {mu_b.shape}, sigma {sigma_a.shape} vs {sigma_b.shape}")
    diff = mu_a - mu_b
    try:
        root = sqrt_cov(sigma_a) if sqrt_sigma_a is None else sqrt_sigma_a
        tr_covmean = trace_sqrt_product(root, sigma_b)
    except (FloatingPointError, np.linalg.LinAlgError):
        # clean-fid: "fid calculation produces singular product; adding eps to diagonal".
        offset = np.eye(len(sigma_a)) * eps
        tr_covmean = trace_sqrt_product(sqrt_cov(sigma_a + offset), sigma_b + offset)
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_covmean)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (n_a, d) and (n_b, d). Any n works here; callers decide
    which sample counts are meaningful (FID is biased upward below ~10k samples)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def fid_bootstrap(
    features_gen: np.ndarray,  # (n, d) generated features, resampled with replacement
    mu_ref: np.ndarray,        # (d,) reference mean (held fixed)
    sigma_ref: np.ndarray,     # (d, d) reference covariance (held fixed)
    rounds: int = 20,          # bootstrap resamples
    level: float = 0.95,       # two-sided interval
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of FID over resamples of the generated set, centred on the estimate.

    Only the generated side is resampled: the interval describes how much FID moves with
    the choice of generated samples, against a fixed reference set. Resampling with
    replacement duplicates samples, which shrinks the covariance and pushes every resampled
    FID above the point estimate F (at small counts by as much as F itself), so a plain
    percentile interval sits wholly above F, and the "basic" interval 2F - q falls near
    zero. We keep the spread of the resamples and move their median onto F: the interval
    always contains F and its width is the sampling variability users compare runs by.
    """
    rng = np.random.default_rng(seed)
    root_ref = sqrt_cov(sigma_ref)  # computed once: the reason for the eigen route
    x = np.asarray(features_gen, dtype=np.float64)
    point = frechet_distance(mu_ref, sigma_ref, *gaussian_stats(x), sqrt_sigma_a=root_ref)
    values = []
    for _ in range(rounds):
        mu, sigma = gaussian_stats(x[rng.integers(0, len(x), len(x))])
        values.append(frechet_distance(mu_ref, sigma_ref, mu, sigma, sqrt_sigma_a=root_ref))
    tail = (1 - level) / 2 * 100
    q_lo, median, q_hi = np.percentile(values, [tail, 50, 100 - tail])
    shift = median - point  # the duplicates' bias, not a property of the model
    return float(q_lo - shift), float(q_hi - shift)
