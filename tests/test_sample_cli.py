"""End to end: `facegen train` on real faces, `--resume`, then `facegen sample`; and the sampling folder rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facegen.cli import app
from facegen.sample import generate, load_generator, sample_to_folder, shard_seeds

TINY = ["model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
        "batch_size=8", "checkpoint_every=2", "keep_checkpoints=2", "sample_every=2", "sample_seeds=0-3",
        "sample_options={sampler: ddim, steps: 2}", "log_every=1", "threads=1"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained_run(celeba_store32, tmp_path_factory):
    """train 4 steps, then --resume to 6 (tiny net, real 32x32 CelebA faces)."""
    run = tmp_path_factory.mktemp("runs") / "tiny32"
    invoke("train", "ddpm-tiny32-v", "--data", celeba_store32.path, "--out", run, "--steps", 4, *TINY)
    invoke("train", "ddpm-tiny32-v", "--data", celeba_store32.path, "--out", run, "--resume", "--steps", 6)
    return run


def test_train_then_resume_writes_the_run_folder(trained_run):
    run = trained_run
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-000004", "step-000006"]  # keep_checkpoints=2 rotated step 2 away
    assert json.loads((run / "checkpoints" / "step-000006" / "state.json").read_text())["images_seen"] == 48
    grids = sorted(p.name for p in (run / "samples").glob("step-*.png"))
    assert grids == ["step-000002.png", "step-000004.png", "step-000006.png"]
    grid = np.asarray(Image.open(run / "samples" / "step-000006.png"))
    assert grid.shape == (2 + 2 * 34, 2 + 2 * 34, 3)  # 4 seeds, 2 per row, 32 px + 2 px padding
    strip = np.asarray(Image.open(run / "samples" / "strip.png"))
    assert strip.shape[0] == 3 * 34 + 2  # one row of seeds per grid
    assert Image.open(run / "loss.png").size[0] > 100
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
    # the run's own clock, for comparisons at equal wall time: it adds up over the resume
    wall = [r["wall_s"] for r in rows]
    assert all(0 < a < b for a, b in zip(wall, wall[1:])), wall
    saved = json.loads((run / "checkpoints" / "step-000004" / "state.json").read_text())["wall_s"]
    assert wall[3] <= saved < wall[4]  # the resumed session starts from the saved clock, not from 0
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").rglob("events.out.tfevents*"))
    meta = json.loads((run / "model" / "facegen.json").read_text())
    assert meta["family"] == "ddpm" and meta["config"]["steps"] == 6


def test_sample_cli_writes_one_png_per_seed_and_skips_existing(trained_run, tmp_path):
    out = tmp_path / "faces"
    result = invoke("sample", trained_run, "--n", 4, "--out", out, "--sampler", "dpm++", "--steps", 5, "--batch", 3)
    assert "4 written" in result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == [".facegen-samples.json"] + [f"seed{s:06d}.png" for s in range(4)]  # the faces and their provenance
    files = files[1:]
    assert np.asarray(Image.open(out / files[0])).shape == (32, 32, 3)
    again = invoke("sample", trained_run, "--seeds", "2-5", "--out", out, "--sampler", "dpm++", "--steps", 5, "--batch", 3)
    assert "2 written, 2 already there" in again.output


def test_sample_folder_matches_generate_and_shards_cover_every_seed(trained_run, tmp_path):
    generator = load_generator(trained_run)
    assert shard_seeds(range(10), (1, 3)) == [1, 4, 7]
    for rank in range(2):  # two "processes" share a seed list
        sample_to_folder(generator, range(5), tmp_path, batch_size=2, shard=(rank, 2), show_progress=False, sampler="ddim", steps=3)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"seed{s:06d}.png" for s in range(5)]
    direct = generate(generator, [3], sampler="ddim", steps=3)[0]
    assert abs(np.asarray(Image.open(tmp_path / "seed000003.png")).astype(int) - direct).max() <= 1


def test_cli_refuses_bad_input_with_one_line(trained_run, tmp_path, celeba_store32):
    from facegen.utils import FacegenError

    with pytest.raises(FacegenError, match="unknown sampler 'euler'"):
        CliRunner().invoke(app, ["sample", str(trained_run), "--n", "1", "--out", str(tmp_path), "--sampler", "euler"], catch_exceptions=False)
    with pytest.raises(FacegenError, match="already holds a run; pass --resume"):
        CliRunner().invoke(app, ["train", "ddpm-tiny32-v", "--data", str(celeba_store32.path), "--out", str(trained_run)], catch_exceptions=False)
    with pytest.raises(FacegenError, match="unknown key 'lr_max'"):
        CliRunner().invoke(app, ["train", "ddpm-tiny32-v", "--data", str(celeba_store32.path), "--out", str(tmp_path / "x"), "lr_max=1"], catch_exceptions=False)
    dry = invoke("train", "ddpm-tiny32-v", "--data", celeba_store32.path, "--out", tmp_path / "y", "--dry-run", "lr=3e-4")
    assert "lr: 0.0003" in dry.output and not (tmp_path / "y").exists()
