"""The metric maths against closed forms and independent implementations (no images, fast)."""

import numpy as np
import pytest
import scipy.linalg

from facegen.metrics.fid import fid_bootstrap, fid_from_features, frechet_distance
from facegen.metrics.kid import kernel_distance, mmd2_unbiased, polynomial_kernel
from facegen.metrics.memorization import audit_summary, nearest_training, uniqueness
from facegen.metrics.neighbours import compute_distances, kth_neighbour_radii, nearest_neighbours
from facegen.metrics.prdc import density_coverage, precision_recall


def scipy_frechet(mu1, s1, mu2, s2):
    """The textbook route (pytorch-fid / clean-fid): scipy.linalg.sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def test_frechet_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    # commuting covariances: FID = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("d, rank", [(64, None), (128, 40)])
def test_frechet_matches_scipy_sqrtm(d, rank):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(rng, d, rank), random_cov(rng, d, rank)  # rank < d: singular, like n < 2048
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_frechet_of_identical_gaussians_is_zero_and_shape_checked():
    rng = np.random.default_rng(1)
    s = random_cov(rng, 32)
    assert abs(frechet_distance(np.ones(32), s, np.ones(32), s)) < 1e-8
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.ones(3), np.eye(3), np.ones(4), np.eye(4))


def test_fid_of_samples_and_bootstrap_interval():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 16))
    assert abs(fid_from_features(x, x)) < 1e-8
    shifted = rng.normal(size=(500, 16)) + 1.0  # mean shift of 1 in 16 dims: FID about 16
    fid = fid_from_features(shifted, x)
    assert 14 < fid < 18
    b = fid_bootstrap(shifted, x, rounds=30, seed=0)
    lo, hi = b["ci"]
    assert b["value"] == pytest.approx(fid) and lo < fid < hi and hi - lo < fid / 2
    assert fid_bootstrap(shifted, x, rounds=30, seed=0) == b  # seeded
    # the interval with resampling bias and its coverage: tests/test_fid_protocol.py


def test_kid_is_unbiased_on_identical_distributions():
    rng = np.random.default_rng(3)
    d, n, pairs = 8, 40, 200
    unbiased, biased = [], []
    for _ in range(pairs):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        unbiased.append(mmd2_unbiased(x, y))
        # the biased V-statistic keeps the diagonals: positive on average even for equal laws
        biased.append(polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean() - 2 * polynomial_kernel(x, y).mean())
    standard_error = np.std(unbiased) / np.sqrt(pairs)
    assert abs(np.mean(unbiased)) < 3 * standard_error
    assert np.mean(biased) > 10 * standard_error


def test_kid_subsets_separate_different_distributions():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same_mean, same_std = kernel_distance(x, y, subsets=20, max_subset_size=100)
    diff_mean, _ = kernel_distance(x, y + 0.5, subsets=20, max_subset_size=100)
    assert same_std > 0 and abs(same_mean) < 3 * same_std
    assert diff_mean > 10 * same_std


def test_neighbours_match_brute_force():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(50, 5))
    brute = np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(compute_distances(a, b), brute, atol=1e-9)
    dist, idx = nearest_neighbours(a, b, k=2)
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1)[:, :2])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :2], atol=1e-9)
    within = np.linalg.norm(b[:, None] - b[None], axis=2)
    np.testing.assert_allclose(kth_neighbour_radii(b, 3), np.sort(within, axis=1)[:, 3], atol=1e-9)


def two_clusters(rng, n=400):
    """Real data: two far-apart blobs A and B in 4-d."""
    a = rng.normal(size=(n, 4))
    return a, rng.normal(size=(n, 4)) + 100


def test_precision_recall_density_coverage_exact_copies():
    rng = np.random.default_rng(6)
    a, b = two_clusters(rng)
    real = np.concatenate([a, b])
    far = rng.normal(size=(len(a), 4)) - 100
    # fake = an exact copy of cluster A plus as many points on a third, unseen blob
    fake = np.concatenate([a, far])
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    assert precision == 0.5 and recall == 0.5 and coverage == 0.5
    # a point of a set lies strictly inside k balls of that set on average (itself and the
    # k-1 nearer neighbours of each ball's centre), so copies of half the set give 0.5 exactly
    assert density == pytest.approx(0.5)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert density_coverage(real, real) == (pytest.approx(1.0), 1.0)


def test_precision_recall_on_fresh_samples_of_half_the_support():
    rng = np.random.default_rng(7)
    a, b = two_clusters(rng)
    real = np.concatenate([a, b])
    fake = rng.normal(size=(400, 4))  # a new sample from cluster A only: mode dropping
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    assert precision > 0.9          # every fake face is realistic...
    assert 0.4 < recall <= 0.5      # ...but half the real distribution is missed
    assert 0.4 < coverage <= 0.5
    assert 0.7 < density < 1.3      # about one real ball per fake point when laws match on A


def test_memorization_flags_a_planted_copy():
    rng = np.random.default_rng(8)
    train = rng.normal(size=(200, 32))
    generated = rng.normal(size=(50, 32))
    generated[17] = train[123] + rng.normal(scale=1e-3, size=32)  # a near-exact copy
    nn = nearest_training(generated, train)
    summary = audit_summary(nn, top=3)
    assert 17 in summary["flagged"]
    assert summary["closest_pairs"][0]["generated"] == 17 and summary["closest_pairs"][0]["train"] == 123
    assert summary["copy_share"] <= 3 / 50  # the novel samples are (almost) never flagged
    assert uniqueness(np.array([0.2, 0.7, 0.9, 0.61])) == 0.75


def test_kid_subsets_vary_even_when_the_sets_are_small():
    from facegen.metrics.kid import subset_size

    assert subset_size(10_000, 20_000) == 1000 and subset_size(32, 500) == 16 and subset_size(32, 32) == 16
    rng = np.random.default_rng(9)
    _, std = kernel_distance(rng.normal(size=(32, 8)), rng.normal(size=(32, 8)), subsets=10)
    assert std > 0  # subsets spanning both whole sets would all be equal


def test_precision_recall_compare_equal_counts_whatever_the_set_sizes():
    # Same distribution, 4x more generated than real: k-NN radii of the big set are smaller,
    # so recall computed on unequal sets collapses. On equal counts it stays near precision.
    from facegen.evaluate import distribution_metrics

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(250, 16)), rng.normal(size=(1000, 16))
    out = distribution_metrics(["pr", "dc"], fake, real)
    assert out["precision"]["n_compared_each"] == 250 and out["recall"]["n_generated"] == 1000
    unequal_recall = precision_recall(real, fake)[1]
    assert out["recall"]["value"] > unequal_recall + 0.05
    assert abs(out["recall"]["value"] - out["precision"]["value"]) < 0.1
    # seeded: the same subset every time
    assert distribution_metrics(["pr"], fake, real)["recall"] == out["recall"]


def test_a_store_subset_is_spread_over_the_split_not_its_first_rows(tmp_path):
    # A merged store lists its first source first: the first n rows would all be that source.
    from facegen.data.store import spread_rows, write_store
    from facegen.evaluate import open_source

    assert spread_rows(10, 5).tolist() == [0, 2, 4, 6, 8]
    rows = spread_rows(27_981, 10_000)
    assert len(set(rows.tolist())) == 10_000 and rows[-1] < 27_981 and np.all(np.diff(rows) > 0)
    faces = np.concatenate([np.zeros((6, 8, 8, 3), np.uint8), np.full((6, 8, 8, 3), 255, np.uint8)])
    store = write_store(tmp_path / "s", {"train": faces, "holdout": faces[:2]}, {"size": 8})
    src = open_source(tmp_path / "s", 4, tmp_path / "out", store, "holdout", {}, progress=False)
    assert src.spread and sorted({int(f.mean()) for f in src.images}) == [0, 255]
    assert not open_source(tmp_path / "s", None, tmp_path / "out", store, "holdout", {}, progress=False).spread
