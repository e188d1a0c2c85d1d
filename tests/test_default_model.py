"""The embedded default model: shipped in the package, used when no run is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facegen.cli import app
from facegen.demo import REFERENCE_FEATURES
from facegen.sample import DEFAULT_MODEL, EXPORT_META, generate, load_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_default_model_ships_with_its_card_evaluation_and_reference():
    meta = json.loads((DEFAULT_MODEL / EXPORT_META).read_text())
    assert meta["family"] == "gan" and meta["resolution"] == 64
    weights = sum(f.stat().st_size for f in DEFAULT_MODEL.glob("*.safetensors"))
    assert 0 < weights < 25 * 2**20  # the size cap
    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    assert "Memorization audit" in card and "samples (generated / reference)" in card
    report = json.loads((DEFAULT_MODEL / "eval" / "metrics.json").read_text())
    assert report["metrics"]["kid"]["n_generated"] >= 1000 and "memorization" in report["metrics"]
    reference = np.load(DEFAULT_MODEL / REFERENCE_FEATURES)["features"]
    assert reference.shape == (1000, 2048)


def test_the_card_the_packaged_evaluation_and_the_readme_agree():
    """One story of the default model: the card's step count is README's (prose and the
    reproduce block's --steps), and the packaged metrics.json's command is quoted word for word
    by the card and README."""
    import re
    from pathlib import Path

    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = json.loads((DEFAULT_MODEL / "eval" / "metrics.json").read_text())["command"]
    flat = lambda text: " ".join(text.split())                        # noqa: E731 (a wrapped line is the same words)
    assert f"`{command}`" in flat(card) and command in flat(readme)
    steps = re.search(r"trained for ([\d,]+) steps", card).group(1)
    assert f"{steps} steps" in readme and re.search(rf"facegen train \S+ .*--steps {steps.replace(',', '')}\b", readme)


def test_default_model_makes_the_same_face_per_seed():
    generator = load_generator(None, device="cpu")
    a = generate(generator, [3, 7], batch_size=2)
    b = generate(generator, [7], batch_size=1)
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1  # batch shapes may round differently on CPU
    assert a[0].std() > 10  # a picture, not a flat colour


def test_sample_without_a_run_uses_the_default_model(tmp_path):
    result = CliRunner().invoke(app, ["sample", "--n", "8", "--out", str(tmp_path / "faces")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "faces").glob("seed*.png"))
    assert [f.name for f in files] == [f"seed{s:06d}.png" for s in range(8)]
    assert (tmp_path / "faces" / ".facegen-samples.json").is_file()  # the folder's provenance record
    assert Image.open(files[0]).size == (64, 64)
