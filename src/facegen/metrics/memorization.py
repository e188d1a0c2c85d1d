"""Memorization audit maths: does a generated image sit on top of one training image?

For each generated sample we find its two nearest training images in some feature space
(Inception, downsampled pixels, face identity). A sample is flagged as a likely copy when
its nearest training image is closer than 1/3 of the distance to the second nearest
(the ratio test of Lowe 2004, as used for training-set copy detection, e.g. Carlini et
al. 2023 "Extracting training data from diffusion models"): a copy stands out from its
runner-up, a novel face sits among many similar ones.
"""

from __future__ import annotations

import numpy as np

from facegen.metrics.neighbours import nearest_neighbours

COPY_RATIO = 1 / 3          # flagged when d1 < COPY_RATIO * d2
SAME_IDENTITY = 0.6         # dlib's threshold: embeddings closer than this are one person


def nearest_training(generated: np.ndarray, train: np.ndarray) -> dict:
    """Nearest and second-nearest training rows per generated row (features (n, d), (m, d))."""
    dist, idx = nearest_neighbours(generated, train, k=2)
    d1 = dist[:, 0]
    d2 = dist[:, 1] if dist.shape[1] > 1 else np.full(len(d1), np.inf)
    # two identical training images give d2 == 0 (then d1 == 0 too): an exact copy, ratio 0
    ratio = np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)
    return {"d1": d1, "d2": d2, "ratio": ratio, "nearest": idx[:, 0]}


def audit_summary(nn: dict, top: int = 8) -> dict:
    """Share of flagged samples and the closest pairs, from `nearest_training`'s output."""
    flagged = nn["ratio"] < COPY_RATIO
    closest = np.argsort(nn["d1"], kind="stable")[:top]
    return {
        "n_generated": int(len(flagged)),
        "copy_share": float(flagged.mean()) if len(flagged) else float("nan"),
        "flagged": np.flatnonzero(flagged).tolist(),
        "closest_pairs": [
            {"generated": int(i), "train": int(nn["nearest"][i]), "distance": float(nn["d1"][i]),
             "ratio": float(nn["ratio"][i])}
            for i in closest
        ],
        "median_nearest_distance": float(np.median(nn["d1"])) if len(flagged) else float("nan"),
    }


def uniqueness(nearest_identity_distance: np.ndarray, threshold: float = SAME_IDENTITY) -> float:
    """Share of generated faces with no training face of the same identity (distance >= threshold)."""
    d = np.asarray(nearest_identity_distance)
    return float((d >= threshold).mean()) if len(d) else float("nan")
