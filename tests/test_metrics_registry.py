"""The metric registry (issue 26): one named function per metric, its protocol in its record,
used by `facegen eval`, the training loop's eval_every and the demo."""

from __future__ import annotations

import numpy as np
import pytest

from facegen.evaluate import distribution_metrics


def features():
    """Two small fixed feature sets of unequal counts (so the k-NN metrics subsample)."""
    rng = np.random.default_rng(26)
    gen = rng.normal(size=(120, 12)).astype(np.float32)
    ref = rng.normal(0.2, 1.1, size=(80, 12)).astype(np.float32)
    return gen, ref


# What `facegen eval` computed for these features before the registry existed (issue 26):
# the refactor must not move a number. (rel 1e-9: another BLAS may round the last bits.)
PINNED = {
    "fid": (1.785723747951426, [1.0235643263827385, 2.5478831695201136]),
    "kid": (0.19716113795594672, 0.11636434566759872),
    "precision": 0.7875, "recall": 0.7125, "density": 1.035, "coverage": 0.9625,
}


def test_eval_numbers_are_those_from_before_the_registry():
    out = distribution_metrics(("fid", "kid", "pr", "dc"), *features())
    assert out["fid"]["value"] == pytest.approx(PINNED["fid"][0], rel=1e-9)
    assert out["fid"]["ci95"] == pytest.approx(PINNED["fid"][1], rel=1e-9)
    assert (out["kid"]["value"], out["kid"]["std"]) == pytest.approx(PINNED["kid"], rel=1e-9)
    for name in ("precision", "recall", "density", "coverage"):
        assert out[name]["value"] == pytest.approx(PINNED[name], rel=1e-12), name
    assert out["kid"]["subsets"] == 100 and out["precision"]["k"] == 3 and out["density"]["k"] == 5
    assert out["precision"]["n_compared_each"] == 80 and out["fid"]["n_generated"] == 120


def test_every_metric_is_registered_with_its_protocol():
    from facegen.metrics.registry import METRICS, measure

    assert set(METRICS) == {"fid", "kid", "pr", "dc"}
    assert METRICS["kid"].protocol == {"subsets": 100, "max_subset_size": 1000, "subset_seed": 0}
    assert METRICS["pr"].protocol == {"k": 3, "subsample_seed": 0}
    assert METRICS["dc"].protocol == {"k": 5, "subsample_seed": 0}
    assert METRICS["fid"].protocol == {"bootstrap_rounds": 50, "level": 0.95, "bootstrap_seed": 0}
    gen, ref = features()
    out = measure(["kid", "pr"], gen, ref)
    assert set(out) == {"kid", "precision", "recall"}
    assert out["kid"]["subsets"] == 100 and out["kid"]["max_subset_size"] == 1000 and out["kid"]["n_reference"] == 80
    assert out["recall"]["k"] == 3 and out["recall"]["n_compared_each"] == 80
    with pytest.raises(KeyError):
        measure(["fidd"], gen, ref)


def test_a_protocol_change_is_recorded_with_the_number():
    """The demo and the loop may ask for fewer bootstrap rounds, never silently: the record says so."""
    from facegen.metrics.registry import measure

    gen, ref = features()
    plain = measure(["fid"], gen, ref, fid={"bootstrap_rounds": 0})["fid"]
    assert plain["value"] == pytest.approx(PINNED["fid"][0], rel=1e-9)  # the same estimate
    assert plain["bootstrap_rounds"] == 0 and "ci95" not in plain


def test_the_training_loop_scores_through_the_registry(tmp_path, monkeypatch):
    """eval_every's KID is the registry's: change the registered KID and the loop's rows follow."""
    import json

    import facegen.metrics.inception as inception
    import facegen.metrics.registry as registry
    from facegen.data.store import write_store
    from facegen.train import train

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    projection = np.random.default_rng(0).normal(size=(16 * 16 * 3, 32)).astype(np.float32)
    monkeypatch.setattr(inception, "extract_features",
                        lambda images, **_: np.stack([np.asarray(images[i], np.float32).ravel() @ projection / 255
                                                      for i in range(len(images))]))
    calls = []

    def fake_kid(gen, ref, **protocol):
        calls.append((len(gen), len(ref), protocol))
        return {"kid": {"value": 0.125, "std": 0.5}}

    monkeypatch.setitem(registry.METRICS, "kid", registry.Metric("kid", fake_kid, registry.METRICS["kid"].protocol))
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (36, 4, 4, 3)).astype(np.uint8).repeat(4, axis=1).repeat(4, axis=2)
    store = write_store(tmp_path / "s16", {"train": faces[:24], "holdout": faces[24:]}, {"size": 16, "source": "synthetic"})
    tiny = ["resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
            "batch_size=4", "grad_accum=2", "log_every=1", "tensorboard=false", "sample_seeds=0-1",
            "sample_options={sampler: ddim, steps: 2}", "sample_every=100", "threads=1", "eval_every=2", "eval_samples=4"]
    train("ddpm-tiny32-v", store.path, tmp_path / "run", tiny, steps=2)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "kid" in r]
    assert evals and all((r["kid"], r["kid_std"]) == (0.125, 0.5) for r in evals)
    assert calls[0][:2] == (4, 4) and calls[0][2] == registry.METRICS["kid"].protocol


def test_the_autoencoder_rfid_is_the_registry_fid_and_the_number_it_was(monkeypatch):
    """rFID (holdout faces vs their reconstructions) goes through the registry too, with the same value as before."""
    import facegen.metrics.inception as inception
    from facegen.families.ae.evaluate import rfid
    from facegen.metrics.fid import fid_from_features

    projection = np.random.default_rng(0).normal(size=(8 * 8 * 3, 6))
    monkeypatch.setattr(inception, "extract_features", lambda images, **_: images.reshape(len(images), -1) / 255 @ projection)
    rng = np.random.default_rng(1)
    real, fake = rng.integers(0, 256, (30, 8, 8, 3)), rng.integers(0, 200, (30, 8, 8, 3))
    before = fid_from_features(real.reshape(30, -1) / 255 @ projection, fake.reshape(30, -1) / 255 @ projection)
    assert rfid(real, fake) == {"rfid": before, "rfid_images": 30}
