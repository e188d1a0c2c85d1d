"""k-NN precision/recall and density/coverage on feature arrays: pure numpy.

- Precision/recall, Kynkaanniemi et al. 2019 ("Improved precision and recall metric"),
  k=3: each set's manifold is the union of balls reaching each point's k-th nearest
  neighbour. Precision = share of generated points inside the real manifold; recall =
  share of real points inside the generated manifold.
- Density/coverage, Naeem et al. 2020 ("Reliable fidelity and diversity metrics"), k=5:
  density = mean number of real balls containing a generated point, divided by k (about 1
  when the distributions match, unbounded above); coverage = share of real balls that
  contain at least one generated point.
"""

from __future__ import annotations

import numpy as np

from facegen.metrics.neighbours import distance_blocks, kth_neighbour_radii


def _inside_counts(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each point, how many balls (centres[j], radii[j]) contain it -> (n,)."""
    counts = np.empty(len(points), dtype=np.int64)
    for rows, d in distance_blocks(points, centres):
        counts[rows] = (d < radii[None, :]).sum(axis=1)
    return counts


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated `fake` (n, d) against `real` (m, d)."""
    precision = (_inside_counts(fake, real, kth_neighbour_radii(real, k)) > 0).mean()
    recall = (_inside_counts(real, fake, kth_neighbour_radii(fake, k)) > 0).mean()
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of generated `fake` (n, d) against `real` (m, d)."""
    radii = kth_neighbour_radii(real, k)
    density = _inside_counts(fake, real, radii).mean() / k
    # a real ball is covered when its nearest generated point lies inside it
    nearest_fake = np.concatenate([d.min(axis=1) for _, d in distance_blocks(real, fake)])
    coverage = (nearest_fake < radii).mean()
    return float(density), float(coverage)
