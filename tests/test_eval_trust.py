"""Issue 26, "numbers you can trust": the reference is checked against a run's training faces,
the memorization audit searches what the run trained on, every subset of a store split
samples all of it, and `facegen compare` never mixes protocols in a column unmarked.

Pictures here are synthetic (noise around a brightness, each one distinct), and the
Inception network is replaced by a fixed pixel projection where only the plumbing is under
test: these tests are about which faces are compared, not about the network.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from facegen.data.store import write_store

DARK, BRIGHT = 40, 210


def pictures(n: int, brightness: int, seed: int, size: int = 32) -> np.ndarray:
    """n distinct uint8 pictures of noise around one brightness."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(brightness, 12, (n, size, size, 3)), 0, 255).astype(np.uint8)


def halves(faces) -> set[str]:
    """Which looks a set of pictures draws from: {"dark"}, {"bright"} or both."""
    return {"bright" if np.asarray(f).mean() > 125 else "dark" for f in faces}


@pytest.fixture
def projected(monkeypatch, tmp_path):
    """Inception features replaced by a fixed projection of the pixels (fast), in a fresh cache."""
    import facegen.metrics.inception as inception

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    projection = np.random.default_rng(0).normal(size=(32 * 32 * 3, 24)).astype(np.float32)

    def features(images, **_):
        from facegen.metrics.images import resized

        return resized(images, 32).reshape(len(images), -1).astype(np.float32) @ projection / 255

    monkeypatch.setattr(inception, "extract_features", features)


@pytest.fixture
def photos():
    """40 'photos' a store is prepared from."""
    return pictures(40, 128, seed=1)


@pytest.fixture
def run_on(tiny_gan_model, tmp_path):
    """A run folder (RUN/model + RUN/config.yaml) whose recorded training store is `store`."""
    def make(store_path, name="run"):
        run = tmp_path / name
        shutil.copytree(tiny_gan_model, run / "model")
        (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "data": str(store_path)}))
        return run
    return make


@pytest.fixture
def training_store(photos, tmp_path):
    """What the run trained on: photos 0-29, holdout 30-39."""
    return write_store(tmp_path / "train-store", {"train": photos[:30], "holdout": photos[30:]}, {"size": 32, "source": "test"})


# ---- the reference against the run's training faces -------------------------------------------


def test_a_reference_sharing_faces_with_the_training_split_is_refused(photos, training_store, run_on, facegen, tmp_path):
    """The same photos prepared with another seed: 7 of its 10 held-out faces were trained on."""
    other_seed = write_store(tmp_path / "other-seed", {"train": np.concatenate([photos[:23], photos[33:]]),
                                                       "holdout": photos[23:33]}, {"size": 32, "source": "test"})
    run = run_on(training_store.path)
    out = tmp_path / "report"
    done = facegen("eval", run, "--ref", other_seed.path, "--n", "4", "--metrics", "kid", "--out", out)
    assert done.returncode == 2, done.stderr
    assert "7 of the 10 reference faces" in done.stderr and "--allow-overlap" in done.stderr
    assert f"--ref {training_store.path}" in done.stderr  # the clean holdout: the training store's own
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not out.exists()  # refused before sampling


def test_allow_overlap_scores_anyway_and_says_so(photos, training_store, run_on, facegen, projected, tmp_path):
    other_seed = write_store(tmp_path / "other-seed", {"train": np.concatenate([photos[:23], photos[33:]]),
                                                       "holdout": photos[23:33]}, {"size": 32, "source": "test"})
    out = tmp_path / "report"
    done = facegen("eval", run_on(training_store.path), "--ref", other_seed.path, "--n", "4", "--metrics", "kid",
                   "--out", out, "--allow-overlap")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "metrics.json").read_text())
    overlap = report["reference"]["overlap"]
    assert (overlap["in_training"], overlap["of"], overlap["allowed"]) == (7, 10, True)
    assert overlap["training_store"] == str(training_store.path) and overlap["method"].startswith("pixel hashes")
    assert "--allow-overlap" in report["command"]
    assert any("7 of the 10 reference faces" in w for w in report["warnings"])


def test_the_training_stores_own_holdout_is_clean_and_its_train_split_is_not(training_store, run_on, facegen, projected, tmp_path):
    run = run_on(training_store.path)
    done = facegen("eval", run, "--ref", training_store.path, "--n", "4", "--metrics", "kid", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    overlap = json.loads((tmp_path / "r" / "metrics.json").read_text())["reference"]["overlap"]
    assert overlap["in_training"] == 0 and overlap["method"] == "same store: its holdout split is disjoint from train"
    refused = facegen("eval", run, "--ref", training_store.path, "--split", "train", "--n", "4", "--metrics", "kid",
                      "--out", tmp_path / "r2")
    assert refused.returncode == 2 and "30 of the 30 reference faces" in refused.stderr


def test_a_model_folder_finds_its_run_and_another_store_of_clean_faces_passes(photos, training_store, run_on, facegen,
                                                                              projected, tmp_path):
    clean = write_store(tmp_path / "clean", {"train": pictures(12, 90, seed=5), "holdout": photos[30:]},
                        {"size": 32, "source": "test"})
    done = facegen("eval", run_on(training_store.path) / "model", "--ref", clean.path, "--n", "4", "--metrics", "kid",
                   "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    overlap = json.loads((tmp_path / "r" / "metrics.json").read_text())["reference"]["overlap"]
    assert overlap["in_training"] == 0 and overlap["of"] == 10 and overlap["training_store"] == str(training_store.path)


def test_a_missing_training_store_is_noted_not_fatal(training_store, run_on, facegen, projected, tmp_path):
    run = run_on(tmp_path / "long-gone")
    done = facegen("eval", run, "--ref", training_store.path, "--n", "4", "--metrics", "kid,mem", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["reference"]["overlap"]["checked"] is False
    assert report["reference"]["overlap"]["note"] == "training store not found: overlap not checked"
    assert any("training store not found: overlap not checked" in w for w in report["warnings"])
    searched = report["metrics"]["memorization"]["searched"]
    assert searched["store"] == str(training_store.path) and searched["of"] == "the reference store (training store not found)"


def test_a_reference_without_holdout_needs_an_explicit_split(facegen, projected, tmp_path):
    from facegen.utils import save_png

    folder = tmp_path / "faces"
    for i, face in enumerate(pictures(5, 100, seed=3)):
        save_png(folder / f"seed{i:06d}.png", face)
    ref = write_store(tmp_path / "ref", {"train": pictures(12, 120, seed=4)}, {"size": 32, "source": "test"})
    refused = facegen("eval", folder, "--ref", ref.path, "--metrics", "kid", "--out", tmp_path / "r")
    assert refused.returncode == 2 and "has no holdout split" in refused.stderr and "--split train" in refused.stderr
    assert refused.stderr.count("\n") == 1
    done = facegen("eval", folder, "--ref", ref.path, "--split", "train", "--metrics", "kid", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["reference"]["split"] == "train"


def test_the_audit_searches_the_faces_the_run_trained_on(photos, training_store, run_on, facegen, projected, tmp_path):
    clean = write_store(tmp_path / "clean", {"train": pictures(12, 90, seed=5), "holdout": photos[30:]},
                        {"size": 32, "source": "test"})
    done = facegen("eval", run_on(training_store.path), "--ref", clean.path, "--n", "4", "--metrics", "mem",
                   "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    mem = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["memorization"]
    assert mem["searched"] == {"store": str(training_store.path), "content_hash": training_store.content_hash,
                               "split": "train", "count": 30, "of": "the faces the run trained on"}
    assert mem["train_count"] == 30 and mem["inception"]["n_train"] == 30  # not the reference's 12
    # a folder of pictures: its training faces are unknown, so the reference's train split
    folder = tmp_path / "r" / "samples"
    done = facegen("eval", folder, "--ref", clean.path, "--metrics", "mem", "--out", tmp_path / "r-folder")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r-folder" / "metrics.json").read_text())
    assert report["metrics"]["memorization"]["searched"]["count"] == 12
    assert report["metrics"]["memorization"]["searched"]["of"] == "the reference store's train split"
    assert report["reference"]["overlap"]["checked"] is False


def test_row_hashes_find_shared_faces_across_shards_and_chunks(photos, tmp_path, monkeypatch):
    import facegen.evaluate as evaluate

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluate, "HASH_CHUNK_ROWS", 7)  # several chunks
    train = write_store(tmp_path / "t", {"train": photos[:30]}, {"size": 32, "source": "test"})
    ref = write_store(tmp_path / "r", {"train": photos[5:9], "holdout": np.concatenate([photos[28:33], photos[28:29]])},
                      {"size": 32, "source": "test"})
    assert evaluate.faces_in_training(ref.split("holdout"), train) == 3  # rows 28, 29 and 28 again


# ---- every subset of a split samples all of it ------------------------------------------------


@pytest.fixture
def merged(tmp_path):
    """A merged store: its first source dark, its second bright, in every split."""
    train = np.concatenate([pictures(30, DARK, seed=10), pictures(30, BRIGHT, seed=11)])
    holdout = np.concatenate([pictures(10, DARK, seed=12), pictures(10, BRIGHT, seed=13)])
    return write_store(tmp_path / "merged", {"train": train, "holdout": holdout}, {"size": 32, "source": "test"})


@pytest.mark.parametrize("how", ["spread", "random"])
def test_a_subset_draws_from_both_sources(merged, how):
    rows = merged.subset_rows("holdout", 6, how=how)
    assert len(set(rows.tolist())) == 6 and np.all(np.diff(rows) > 0) and rows.max() < 20
    assert halves(merged.subset("holdout", 6, how=how)) == {"dark", "bright"}
    assert merged.subset_rows("holdout", 6, how=how).tolist() == rows.tolist()  # deterministic
    assert len(merged.subset("holdout", None)) == 20 and len(merged.subset("holdout", 99)) == 20  # all of it


def test_subset_random_is_seeded_and_unknown_kinds_are_refused(merged):
    assert merged.subset_rows("train", 5, how="random", seed=1).tolist() != merged.subset_rows("train", 5, how="random", seed=2).tolist()
    with pytest.raises(ValueError, match="spread or random"):
        merged.subset_rows("train", 5, how="first")


def test_reference_and_pool_features_draw_from_both_sources(merged, monkeypatch, tmp_path):
    import facegen.metrics.inception as inception

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(inception, "extract_features", lambda images, **_: (seen.append(halves(images[i] for i in range(len(images))))
                                                                           or np.zeros((len(images), 4), np.float32)))
    inception.store_features(merged, "holdout", 4, progress=False)
    assert seen[-1] == {"dark", "bright"}


def test_face_check_reference_draws_from_both_sources(merged, monkeypatch, tmp_path):
    import facegen.evaluate as evaluate
    import facegen.metrics.faces as faces

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluate, "FACES_MAX", 4)
    seen = []

    def check_array(images):
        seen.append(halves(images))
        return np.zeros((len(images), 6))

    monkeypatch.setattr(faces, "check_array", check_array)
    monkeypatch.setattr(faces, "face_plot", lambda g, r: b"")
    summary, _ = evaluate.face_checks(pictures(3, 128, seed=0), merged, "holdout", progress=False)
    assert summary["reference"]["n"] == 4 and seen[-1] == {"dark", "bright"}


def test_memorization_pools_draw_from_both_sources(merged, monkeypatch, tmp_path):
    import facegen.metrics.identity as identity
    import facegen.metrics.inception as inception
    from facegen.metrics.audit import memorization_audit

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    seen = {}

    def features(images, label="", **_):
        seen["inception"] = halves(images[i] for i in range(len(images)))
        return np.random.default_rng(len(images)).normal(size=(len(images), 4)).astype(np.float32)

    def identities(images, progress=True, label=""):
        seen.setdefault("identity", halves(images[i] for i in range(len(images))))
        return np.full((len(images), 128), np.nan, np.float32)

    monkeypatch.setattr(inception, "extract_features", features)
    monkeypatch.setattr(identity, "identity_embeddings", identities)
    generated = pictures(3, 128, seed=0)
    audit, _ = memorization_audit(generated, features(generated), merged, 8, False, 2, 4, 8, inception_max_train=6)
    assert seen == {"inception": {"dark", "bright"}, "identity": {"dark", "bright"}}
    assert audit["inception"]["n_train"] == 6 and audit["identity"]["n_train"] == 4


def test_demo_reference_features_draw_from_both_sources(merged, monkeypatch, tmp_path):
    import runpy
    import sys
    from pathlib import Path

    import facegen.metrics.inception as inception

    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception, "extract_features",
                        lambda images, **_: np.array([[np.asarray(images[i]).mean()] for i in range(len(images))], np.float32))
    out = tmp_path / "ref.npz"
    monkeypatch.setattr(sys, "argv", ["reference_features.py", str(merged.path), "--n", "6", "--out", str(out)])
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "reference_features.py"), run_name="__main__")
    saved = np.load(out)
    brightness = saved["features"][:, 0].astype(float)
    assert (brightness < 125).any() and (brightness > 125).any()
    assert "evenly spaced" in str(saved["what"]) and str(saved["rows"]) == "spread"


def test_autoencoder_scale_and_reconstructions_draw_from_both_sources(merged, monkeypatch, tmp_path):
    import facegen.families.ae as ae

    seen = {}

    def scale(vae, pixels, n, device):
        seen["scale"] = (len(pixels), halves(pixels))
        return 1.0

    def reconstructions(vae, pixels, n, device):
        seen["reconstruction"] = (len(pixels), halves(pixels))
        return {"images": len(pixels)}, np.zeros((8, 8, 3), np.uint8)

    monkeypatch.setattr(ae, "latent_scale", scale)
    monkeypatch.setattr(ae, "reconstruction_metrics", reconstructions)
    cfg = {"data": str(merged.path), "lr": 1e-4, "adam_betas": [0.9, 0.999], "weight_decay": 0.0,
           "model": {"channels": [8, 8, 8], "latent_channels": 3, "layers_per_block": 1, "norm_groups": 4,
                     "perceptual": "features", "disc_channels": 8, "disc_layers": 1, "scale_images": 6, "eval_images": 4}}
    built = ae.FAMILY.build(cfg, 32)
    ae.FAMILY.export(built, cfg, tmp_path / "run" / "model")
    assert seen == {"scale": (6, {"dark", "bright"}), "reconstruction": (4, {"dark", "bright"})}


# ---- compare never mixes protocols in a column unmarked ---------------------------------------


def report(name: str, kid: float, *, network="aa" * 32, resize="clean", n_generated=500, split="holdout"):
    return {"source": {"name": name, "count": n_generated},
            "reference": {"content_hash": "ab" * 32, "split": split, "count": 1000},
            "feature_network": {"sha256": network, "resize": resize},
            "metrics": {"kid": {"value": kid, "std": 0.01, "subsets": 100, "n_generated": n_generated, "n_reference": 1000}}}


def write_reports(tmp_path, reports) -> list:
    folders = []
    for r in reports:
        folder = tmp_path / r["source"]["name"]
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps(r))
        folders.append(folder)
    return folders


@pytest.mark.parametrize("odd, difference", [
    ({"network": "cd" * 32}, "feature network cdcdcdcdcdcd (column: aaaaaaaaaaaa)"),
    ({"resize": "PIL bicubic, antialiased to 299x299"}, "resize 'PIL bicubic, antialiased to 299x299' (column: 'clean')"),
    ({"split": "train"}, "reference 'train' of store abababababab (column: 'holdout' of store abababababab)"),
    ({"n_generated": 99}, "99 generated pictures (column: 500)"),
])
def test_compare_marks_figures_of_another_protocol_and_never_averages_them_in(odd, difference, tmp_path):
    from facegen.metrics.compare import compare

    reports = [report("ddpm-seed0", 0.010), report("ddpm-seed1", 0.020), report("gan-seed0", 0.050),
               report("gan-seed1", 0.070, **odd)]
    table = compare(write_reports(tmp_path, reports), show=False)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "15.00 ± 7.07 |" in rows["ddpm"]
    assert "50.00 / 70.00†1 |" in rows["gan"]  # never 60 ± 14: each protocol its own figure, the odd one marked
    assert f"- †1 not comparable with the rest of its column: {difference}." in table.splitlines()


def test_compare_notes_name_the_feature_network_and_resize(tmp_path):
    from facegen.metrics.compare import compare

    table = compare(write_reports(tmp_path, [report("ddpm-seed0", 0.010)]), show=False)
    assert "- KID x1e3: 500 generated pictures vs 1000 reference pictures ('holdout' of store abababababab); " \
           "features: network aaaaaaaaaaaa, resize 'clean'." in table.splitlines()
