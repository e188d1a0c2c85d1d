"""Frechet Inception Distance (Heusel et al. 2017) on feature arrays: pure numpy, no I/O.

    FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr( (S_a S_b)^{1/2} )

tr((S_a S_b)^{1/2}) is computed by symmetric eigen-decompositions instead of scipy's slow
`sqrtm`: with A = S_a^{1/2} (eigh), S_a S_b is similar to the symmetric PSD matrix
A S_b A, so the trace is the sum of the square roots of that matrix's eigenvalues.
`sqrt_cov` can be computed once per set and passed in (`sqrt_sigma_a`).
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


BOOTSTRAP_METHOD = ("normal interval from the bootstrap standard error: estimate +/- z * (standard deviation of FID "
                    "over resamples of both sets, each drawn with replacement at its own size)")


def fid_bootstrap(
    features_gen: np.ndarray,  # (n_gen, d) generated features
    features_ref: np.ndarray,  # (n_ref, d) reference features
    rounds: int = 50,          # bootstrap resamples
    level: float = 0.95,       # two-sided interval
    seed: int = 0,
) -> dict:
    """FID with a bootstrap interval: {"value", "ci": [lo, hi], "se", "resampled_mean", "rounds", "level", "method"}.

    Both sets are resampled, independently and with replacement: a fresh draw of the
    reference moves FID too, and with the usual smaller reference (5,000 vs 10,000) it moves
    it most. The interval is value +/- z * se, se the standard deviation of the resampled
    FIDs. Why not percentiles: duplicates in a resample shrink its covariance and lift every
    resampled FID above the estimate by about the same amount (`resampled_mean` - value), so
    a percentile interval can lie wholly above the estimate and a reflected ("basic") one
    wholly below; that shift moves the resamples together and leaves their spread alone.
    And tens of resamples pin a standard deviation down (about 10% at 50) where the 2.5th and
    97.5th percentiles would be the extremes. The interval thus always contains the estimate;
    it is for FID at these two counts (the estimate's own sampling spread), not for FID at
    infinite counts, which is lower (FID is biased upward at any finite count).
    """
    from statistics import NormalDist

    rng = np.random.default_rng(seed)
    gen, ref = np.asarray(features_gen, dtype=np.float64), np.asarray(features_ref, dtype=np.float64)
    value = frechet_distance(*gaussian_stats(ref), *gaussian_stats(gen))
    values = []
    for _ in range(rounds):
        g, r = gen[rng.integers(0, len(gen), len(gen))], ref[rng.integers(0, len(ref), len(ref))]
        values.append(frechet_distance(*gaussian_stats(r), *gaussian_stats(g)))
    se = float(np.std(values, ddof=1))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return {"value": value, "ci": [max(0.0, value - z * se), value + z * se], "se": se,  # FID >= 0
            "resampled_mean": float(np.mean(values)), "rounds": rounds, "level": level, "method": BOOTSTRAP_METHOD}
