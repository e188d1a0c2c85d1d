"""The metric registry: every distribution metric facegen reports, by name, with its protocol.

    measure(["fid", "kid"], generated_features, reference_features)
        -> {"fid": {"value": ..., "ci95": ..., "bootstrap_rounds": 50, ..., "n_generated": ...},
            "kid": {"value": ..., "std": ..., "subsets": 100, ..., "n_reference": ...}}

A metric is a function of two feature sets (generated, reference) registered under a name
with its protocol: the settings besides the two sets that decide the number (k, subsets,
bootstrap rounds, seeds). `measure` runs it with that protocol, or with the changes a caller
asks for, and writes the protocol actually used into every entry beside the counts, so a
number never travels without how it was made. `facegen eval`, the training loop's
eval_every and `facegen demo` all score through here (stylegan2-ada's metric_main.py is the
model). The maths stays in fid.py, kid.py and prdc.py; the feature network and resize, the
same for every metric, are recorded once per report (`feature_network`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FID_MIN_SAMPLES = 2048   # below this the 2048-d covariance is singular: FID is refused (eval) or skipped (training)


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[..., dict]   # compute(generated, reference, **protocol) -> {entry name: entry}
    protocol: dict                 # the registered settings, passed to compute as keywords


METRICS: dict[str, Metric] = {}


def register(name: str, **protocol):
    def add(compute):
        METRICS[name] = Metric(name, compute, protocol)
        return compute
    return add


def measure(names, generated: np.ndarray, reference: np.ndarray, **changes: dict) -> dict:
    """metrics.json entries of the named metrics for features generated (n, d) and reference (m, d).

    changes: {metric name: {protocol key: value}} for a caller that needs another setting
    (the training loop's FID without a bootstrap interval); the entry records it."""
    counts = {"n_generated": int(len(generated)), "n_reference": int(len(reference))}
    out = {}
    for name in names:
        metric = METRICS[name]
        protocol = metric.protocol | changes.get(name, {})
        for entry_name, entry in metric.compute(generated, reference, **protocol).items():
            out[entry_name] = {**entry, **protocol, **counts}
    return out


@register("fid", bootstrap_rounds=50, level=0.95, bootstrap_seed=0)
def fid(generated, reference, bootstrap_rounds: int, level: float, bootstrap_seed: int) -> dict:
    """Frechet distance of the two Gaussian fits, with a bootstrap interval unless rounds is 0."""
    from facegen.metrics import fid as maths

    if not bootstrap_rounds:
        return {"fid": {"value": maths.frechet_distance(*maths.gaussian_stats(reference), *maths.gaussian_stats(generated))}}
    b = maths.fid_bootstrap(generated, reference, rounds=bootstrap_rounds, level=level, seed=bootstrap_seed)
    # ci95 and bootstrap_rounds keep their pre-issue-18 names; the method says what changed
    return {"fid": {"value": b["value"], "ci95": b["ci"], "bootstrap_se": b["se"],
                    "bootstrap_resampled_mean": b["resampled_mean"], "bootstrap_resampled": ["generated", "reference"],
                    "ci_method": b["method"]}}


@register("kid", subsets=100, max_subset_size=1000, subset_seed=0)
def kid(generated, reference, subsets: int, max_subset_size: int, subset_seed: int) -> dict:
    """Unbiased MMD^2, cubic kernel: mean and std over random subsets of both sets."""
    from facegen.metrics.kid import kernel_distance, subset_size

    mean, std = kernel_distance(generated, reference, subsets=subsets, max_subset_size=max_subset_size, seed=subset_seed)
    return {"kid": {"value": mean, "std": std, "subset_size": subset_size(len(generated), len(reference), max_subset_size)}}


@register("pr", k=3, subsample_seed=0)
def precision_recall(generated, reference, k: int, subsample_seed: int) -> dict:
    """Kynkaanniemi et al. 2019 on equal counts (see equal_count_subsets)."""
    from facegen.metrics.prdc import precision_recall as maths

    gen, ref, n_each = equal_count_subsets(generated, reference, subsample_seed)
    precision, recall = maths(ref, gen, k=k)
    return {"precision": {"value": precision, "n_compared_each": n_each}, "recall": {"value": recall, "n_compared_each": n_each}}


@register("dc", k=5, subsample_seed=0)
def density_coverage(generated, reference, k: int, subsample_seed: int) -> dict:
    """Naeem et al. 2020 on equal counts (see equal_count_subsets)."""
    from facegen.metrics.prdc import density_coverage as maths

    gen, ref, n_each = equal_count_subsets(generated, reference, subsample_seed)
    density, coverage = maths(ref, gen, k=k)
    return {"density": {"value": density, "n_compared_each": n_each}, "coverage": {"value": coverage, "n_compared_each": n_each}}


def equal_count_subsets(gen: np.ndarray, ref: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Both feature sets cut to the smaller count: a seeded random subset of the larger, kept in order.

    k-NN radii shrink as a set grows, so both sets enter at the same count (Kynkaanniemi et
    al. and Naeem et al. compare equal-size sets): 10,000 generated against 2,500 real would
    push recall toward 0."""
    n = min(len(gen), len(ref))
    rng = np.random.default_rng(seed)

    def pick(x):
        return x if len(x) == n else x[np.sort(rng.choice(len(x), n, replace=False))]

    return pick(gen), pick(ref), int(n)
