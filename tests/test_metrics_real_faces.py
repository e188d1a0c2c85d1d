"""The feature network and the metrics on real faces (or, where ../shared/data is absent,
on the default GAN's faces, framed like UTKFace and like CelebA: two sets that differ in
framing as the real two do, and the same orderings hold; see conftest.py).

The FID ordering test runs the pure Frechet function on 40 pictures per set (plus 24 noise
pictures), not the `facegen eval` command, which refuses FID below 2,048 pictures: at 40
pictures FID is strongly biased upward (about 100 for two samples of one distribution), but
the ordering of the three comparisons is still wide. Inception on this CPU does a few
pictures per second, so the features are extracted once per module.
"""

import numpy as np
import pytest

from facegen.data.transforms import crop_celeba
from facegen.metrics.fid import fid_from_features
from facegen.metrics.images import ImageFolder
from facegen.metrics.inception import FEATURE_DIM, extract_features, network_input
from facegen.metrics.kid import kernel_distance

N = 40


@pytest.fixture(scope="module")
def features(utk_dir, celeba_dir):
    rng = np.random.default_rng(0)
    utk = ImageFolder(utk_dir)
    picks = rng.choice(len(utk), 2 * N, replace=False)  # random: UTKFace files sort by age
    celeba = ImageFolder(celeba_dir, limit=N)
    sets = {
        "utk_a": [utk[i] for i in picks[:N]],
        "utk_b": [utk[i] for i in picks[N:]],
        "celeba": [crop_celeba(celeba[i], 89) for i in range(N)],
        "noise": rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8),
    }
    return {name: extract_features(images, batch_size=20, progress=False) for name, images in sets.items()} | {"utk_images": sets["utk_a"]}


def test_feature_shape_range_and_input_convention(features):
    f = features["utk_a"]
    assert f.shape == (N, FEATURE_DIM) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0  # pool3 after ReLU
    x = network_input(np.array([[[[0, 128, 255]]]], dtype=np.uint8))  # (1, 1, 1, 3) -> NCHW
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 0.0, 255 / 128 - 1])


def test_features_do_not_depend_on_batching(features):
    again = extract_features(features["utk_images"][:5], batch_size=2, progress=False)
    np.testing.assert_allclose(again, features["utk_a"][:5], rtol=1e-4, atol=1e-4)


def test_fid_orders_same_source_cross_dataset_and_noise(features):
    same = fid_from_features(features["utk_a"], features["utk_b"])
    cross = fid_from_features(features["utk_a"], features["celeba"])
    noise = fid_from_features(features["utk_a"], features["noise"])
    assert same < 0.75 * cross, (same, cross)
    assert cross < 0.6 * noise, (cross, noise)
    assert abs(fid_from_features(features["utk_a"], features["utk_a"])) < 1e-3  # a set against itself


def test_kid_orders_same_source_and_cross_dataset(features):
    same, _ = kernel_distance(features["utk_a"], features["utk_b"], subsets=50)
    cross, _ = kernel_distance(features["utk_a"], features["celeba"], subsets=50)
    noise, _ = kernel_distance(features["utk_a"], features["noise"], subsets=50)
    assert same < 0.5 * cross < 0.5 * noise, (same, cross, noise)
