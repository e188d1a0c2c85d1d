"""scripts/sampling_ablation.py scores through the one metric registry (facegen eval's KID and FID):
its rows equal the registry's numbers on the same features and record the protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import export_tiny_ddpm

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("one_torch_thread")
def test_rows_are_the_registry_numbers_and_record_their_protocol(tmp_path_factory, celeba_store32, tmp_path):
    from facegen import sample
    from facegen.data.store import FaceStore
    from facegen.metrics.inception import extract_features, store_features
    from facegen.metrics.registry import METRICS, measure

    run = export_tiny_ddpm(tmp_path_factory, "ddim", 2)
    out = tmp_path / "ablation.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sampling_ablation.py"), str(run), "clip=0,steps=2",
                           "--ref", str(celeba_store32.path), "--n", "8", "--out", str(out), "--grids", str(tmp_path / "grids")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["n_generated"] == 8 and result["n_reference"] == 8 and (tmp_path / "grids" / "clip-0_steps-2.png").is_file()
    assert row["protocol"]["kid"]["subsets"] == METRICS["kid"].protocol["subsets"] and row["protocol"]["fid"]["bootstrap_rounds"] == 0

    generator = sample.load_generator(run, "cpu")
    generator.scheduler_config = {**generator.scheduler_config, "clip_sample": False}
    images = sample.generate(generator, range(8), batch_size=50, sampler="ddim", steps=2)
    expected = measure(["kid", "fid"], extract_features(images, progress=False),
                       store_features(FaceStore(celeba_store32.path), "holdout", 8, spread=True), fid={"bootstrap_rounds": 0})
    assert row["kid"] == pytest.approx(expected["kid"]["value"], rel=1e-4, abs=1e-6)
    assert row["fid"] == pytest.approx(expected["fid"]["value"], rel=1e-4)


@pytest.mark.usefixtures("one_torch_thread")
def test_clip_1_clamps_a_latent_family_whose_sampler_never_clamps(tmp_path_factory, celeba_store32, tmp_path):
    """ldm forces clip_sample off in every sampler it builds: the ablation's clip=1 must still clamp
    (before the fix both rows were the unclamped model, to the last digit)."""
    from test_diffusion_core import _export

    run = _export(tmp_path_factory, "ldm", "ddpm")
    out = tmp_path / "clip.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sampling_ablation.py"), str(run), "clip=1,steps=2", "clip=0,steps=2",
                           "--ref", str(celeba_store32.path), "--n", "6", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    clamped, free = json.loads(out.read_text())["rows"]
    assert clamped["clip_sample"] is True and free["clip_sample"] is False
    assert clamped["kid"] != free["kid"] and clamped["fid"] != free["fid"]
