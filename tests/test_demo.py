"""`facegen demo`: grid, samples, face check, KID/PR against shipped reference features, HTML report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facegen.cli import app
from facegen.demo import REFERENCE_FEATURES, run_demo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_without_reference_features(tiny_gan_model, tmp_path):
    r = run_demo(tmp_path / "demo", n_eval=16, n_grid=16, model=tiny_gan_model, progress=False)
    out = tmp_path / "demo"
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [f"seed{s:06d}.png" for s in range(16)]
    grid = np.asarray(Image.open(out / "faces.png"))
    assert grid.shape[0] > 32 and grid.shape[1] > 32 * 8  # 8 faces of 32 px per row, with padding
    assert r["faces"]["n"] == 16 and 0.0 <= r["faces"]["one_face_share"] <= 1.0
    assert "distribution" not in r  # no reference features shipped with this model
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "KID and precision/recall skipped" in html
    assert json.loads((out / "demo.json").read_text())["n_samples"] == 16


def test_demo_scores_against_shipped_reference(tiny_gan_model, tmp_path, monkeypatch):
    """With reference features beside the model, KID and precision/recall are computed
    against them. The Inception network is replaced by a fixed pixel projection here (the
    real one is exercised in the metrics tests); the plumbing and maths are real."""
    import facegen.metrics.inception as inception

    model, features = model_with_projected_features(tiny_gan_model, tmp_path, monkeypatch)
    reference = features(np.random.default_rng(1).integers(0, 256, size=(40, 32, 32, 3)))
    np.savez(model / REFERENCE_FEATURES, features=reference.astype(np.float16), what="random pictures",
             network=inception.network_hash(), resize=inception.resize_mode())

    r = run_demo(tmp_path / "demo", n_eval=24, n_grid=16, model=model, progress=False)
    d = r["distribution"]
    assert (d["n_generated"], d["n_reference"]) == (24, 40)
    assert np.isfinite(d["kid"]) and 0.0 <= d["precision"] <= 1.0 and 0.0 <= d["recall"] <= 1.0
    assert "KID" in (tmp_path / "demo" / "report.html").read_text()


def test_demo_scores_with_the_protocol_of_facegen_eval(tiny_gan_model, tmp_path, monkeypatch):
    """The demo's KID and precision/recall are `facegen eval`'s (the metric registry): 100 KID
    subsets and precision/recall on equal counts (24 of each here, not 24 against 40, which
    shrinks recall), recorded in demo.json."""
    import facegen.metrics.inception as inception
    from facegen.evaluate import distribution_metrics

    model, features = model_with_projected_features(tiny_gan_model, tmp_path, monkeypatch)
    reference = features(np.random.default_rng(1).integers(0, 256, size=(40, 32, 32, 3))).astype(np.float16)
    np.savez(model / REFERENCE_FEATURES, features=reference, what="random pictures", rows="spread",
             network=inception.network_hash(), resize=inception.resize_mode())

    r = run_demo(tmp_path / "demo", n_eval=24, n_grid=16, model=model, progress=False)
    d = r["distribution"]
    assert d["metrics"]["kid"]["subsets"] == 100 and d["metrics"]["recall"]["n_compared_each"] == 24
    assert d["reference_rows"] == "spread"
    images = np.stack([np.asarray(Image.open(tmp_path / "demo" / "samples" / f"seed{s:06d}.png")) for s in range(24)])
    by_eval = distribution_metrics(["kid", "pr"], features(images), reference.astype(np.float32))
    assert (d["kid"], d["kid_std"], d["recall"]) == (by_eval["kid"]["value"], by_eval["kid"]["std"], by_eval["recall"]["value"])
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())["distribution"]["metrics"]
    assert saved["precision"]["k"] == 3 and saved["kid"]["subset_seed"] == 0


@pytest.mark.parametrize("stale", [{"resize": "uint8 RGB PIL bicubic"}, {"network": "0123abcd"}, {}])
def test_demo_refuses_reference_features_of_another_resize_or_network(tiny_gan_model, tmp_path, stale):
    """Features from another resize (or network, or unrecorded) are not comparable: a one-line
    error naming the file and the script that rebuilds it, not a silently wrong KID."""
    import facegen.metrics.inception as inception
    from facegen.utils import FacegenError

    model = tmp_path / "model"
    shutil.copytree(tiny_gan_model, model)
    keys = {"network": inception.network_hash(), "resize": inception.resize_mode(), **stale} if stale else {}
    np.savez(model / REFERENCE_FEATURES, features=np.zeros((8, 2048), np.float16), what="stale", **keys)
    with pytest.raises(FacegenError, match=r"reference-features\.npz: .*rebuild them with scripts/reference_features\.py"):
        run_demo(tmp_path / "demo", n_eval=8, n_grid=8, model=model, progress=False)


def test_the_shipped_reference_features_match_this_network_and_resize():
    import facegen.metrics.inception as inception
    from facegen.sample import DEFAULT_MODEL

    shipped = np.load(DEFAULT_MODEL / REFERENCE_FEATURES)
    assert str(shipped["network"]) == inception.network_hash() and str(shipped["resize"]) == inception.resize_mode()
    assert shipped["features"].shape == (1000, 2048)


def test_demo_cli_reports_paths_and_refuses_missing_model(tiny_gan_model, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--n", "16", "--model", str(tiny_gan_model)])
    assert ok.exit_code == 0, ok.output
    assert "report.html" in ok.output and "one face found in" in ok.output
    bad = runner.invoke(app, ["demo", "--out", str(tmp_path / "e"), "--model", str(tmp_path / "nope")])
    assert bad.exit_code != 0
    assert "no such run or model folder" in str(bad.exception)


def test_the_report_renders_the_model_card_as_html(tiny_gan_model, tmp_path):
    """The model card in report.html is HTML (headings, tables, lists, code), not raw markdown."""
    model = tmp_path / "model"
    shutil.copytree(tiny_gan_model, model)
    (model / "MODEL_CARD.md").write_text(
        "# Model card: tiny\n\nFamily `gan`, **64x64** faces,\ntrained briefly.\n\n"
        "| metric | value |\n| --- | --- |\n| FID | 50.33 |\n\n"
        "- **Data**: a store\n  of faces\n- two < three\n\n```yaml\nlr: 0.0002\n# not a heading\n```\n")
    run_demo(tmp_path / "demo", n_eval=16, n_grid=16, model=model, progress=False)
    report = (tmp_path / "demo" / "report.html").read_text()
    card = report[report.index("Model card</h2>"):]
    assert "<h3>Model card: tiny</h3>" in card and "# Model card" not in card
    assert "<p>Family <code>gan</code>, <b>64x64</b> faces, trained briefly.</p>" in card
    assert "<th>metric</th><th>value</th>" in card and "<td>FID</td><td>50.33</td>" in card and "| ---" not in card
    assert "<li><b>Data</b>: a store of faces</li><li>two &lt; three</li>" in card
    assert "<pre><code>lr: 0.0002\n# not a heading</code></pre>" in card


def model_with_projected_features(tiny_gan_model, tmp_path, monkeypatch):
    """A copy of the tiny model, and Inception replaced by a fixed random projection (fast, deterministic)."""
    import facegen.metrics.inception as inception

    model = tmp_path / "model"
    shutil.copytree(tiny_gan_model, model)
    projection = np.random.default_rng(0).normal(size=(32 * 32 * 3, 64)).astype(np.float32)

    def features(images, **_):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) @ projection / 255

    monkeypatch.setattr(inception, "extract_features", features)
    return model, features
