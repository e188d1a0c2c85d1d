"""Training-time evaluation (eval_every): KID rows in metrics.jsonl and eval.png, on fixed
seeds with the EMA weights, without touching the training trajectory."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from facegen.checkpoint import latest_checkpoint
from facegen.config import load_config
from facegen.data.store import FaceStore, write_store
from facegen.train import Loop, train
from facegen.utils import FacegenError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The tiny 16x16 UNet of test_train_loop: milliseconds a step; the evaluation costs the rest.
TINY = [
    "resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
    "batch_size=4", "grad_accum=2", "log_every=1", "tensorboard=false", "sample_seeds=0-1",
    "sample_options={sampler: ddim, steps: 2}", "sample_every=100", "ema.decay=0.9", "warmup_steps=2", "threads=1",
]
EVAL = ["eval_every=2", "eval_samples=4", "checkpoint_every=2"]
TINY_GAN = ["model.z_dim=16", "model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8", "batch_size=4",
            "log_every=1", "tensorboard=false", "sample_seeds=0-1", "threads=1"]


def blob_store(path, size: int, train: int, holdout: int, seed: int = 0):
    """Synthetic 'faces' (smooth random blobs) with a holdout split: no dependency on real photos."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (train + holdout, 4, 4, 3)).astype(np.uint8)
    faces = low.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    splits = {"train": faces[:train], **({"holdout": faces[train:]} if holdout else {})}
    return write_store(path, splits, {"size": size, "source": "synthetic"}).path


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    return blob_store(tmp_path_factory.mktemp("store") / "s16", 16, train=24, holdout=12)


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    """Inception features cached in a temporary folder, not in ~/.cache/facegen."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGEN_CACHE", str(tmp_path_factory.mktemp("feature-cache")))
        yield


def read_rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_rows(rows: list[dict]) -> list[dict]:
    """The training rows without their clock readings (speed, elapsed time)."""
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "wall_s")} for r in rows if "kid" not in r]


@pytest.fixture(scope="module")
def evaluated_run(store16, feature_cache, one_torch_thread, tmp_path_factory):
    """5 steps with an evaluation every 2 steps (and at the last)."""
    run = tmp_path_factory.mktemp("runs") / "evaluated"
    train("ddpm-tiny32-v", store16, run, TINY + EVAL, steps=5)
    return run


def test_eval_rows_and_plot_and_the_training_is_untouched(store16, evaluated_run, tmp_path):
    plain = tmp_path / "plain"
    train("ddpm-tiny32-v", store16, plain, TINY + ["checkpoint_every=2"], steps=5)

    rows = read_rows(evaluated_run)
    evals = [r for r in rows if "kid" in r]
    assert [r["step"] for r in evals] == [2, 4, 5]  # every eval_every steps, and the last step (the exported weights)
    for r in evals:
        assert math.isfinite(r["kid"]) and math.isfinite(r["kid_std"]) and r["kid_std"] >= 0
        assert (r["eval_samples"], r["eval_reference"]) == (4, 4) and r["eval_seconds"] > 0
        assert "fid" not in r  # FID needs 2,048 faces a side
    # The evaluation draws nothing from the training RNG: the same losses, bit for bit, and the same weights.
    assert loss_rows(rows) == loss_rows(read_rows(plain))
    a, b = (load_file(latest_checkpoint(run / "checkpoints") / "nets" / "unet.safetensors") for run in (plain, evaluated_run))
    assert all(torch.equal(a[k], b[k]) for k in a)

    with Image.open(evaluated_run / "eval.png") as png:
        assert png.format == "PNG" and png.size[0] > 100
        png.verify()
    assert (evaluated_run / "loss.png").is_file() and not (plain / "eval.png").exists()


def test_a_resumed_run_continues_the_same_eval_log(store16, evaluated_run, tmp_path):
    split = tmp_path / "split"
    train("ddpm-tiny32-v", store16, split, TINY + EVAL, steps=2)
    train("ddpm-tiny32-v", store16, split, [], steps=5, resume=True)
    whole_evals = [r for r in read_rows(evaluated_run) if "kid" in r]
    split_evals = [r for r in read_rows(split) if "kid" in r]
    assert [r["step"] for r in split_evals] == [2, 4, 5]  # step 2 once: the resumed invocation does not redo it
    for a, b in zip(whole_evals, split_evals):
        assert b["kid"] == pytest.approx(a["kid"], rel=1e-4, abs=1e-7)


def test_a_run_out_of_time_evaluates_the_weights_it_exports(store16, tmp_path, monkeypatch):
    # A clock that advances 1 minute per reading (as in test_train_loop): a limit of 2.5 minutes stops after a few steps.
    import time as real_time
    from types import SimpleNamespace

    import facegen.train as train_module

    ticks = iter(range(0, 10_000))
    clock = SimpleNamespace(monotonic=lambda: 60.0 * next(ticks), perf_counter=real_time.perf_counter, time=real_time.time)
    monkeypatch.setattr(train_module, "time", clock)
    run = tmp_path / "timed"
    train("ddpm-tiny32-v", store16, run, TINY + ["time_limit=2.5", "eval_every=100", "eval_samples=4"], steps=50)
    stopped = json.loads((latest_checkpoint(run / "checkpoints") / "state.json").read_text())["step"]
    assert 1 <= stopped < 50
    assert [r["step"] for r in read_rows(run) if "kid" in r] == [stopped]  # not a multiple of 100, evaluated all the same


def test_the_same_weights_and_seeds_give_the_same_kid(store16, tmp_path):
    cfg = load_config("ddpm-tiny32-v", TINY + ["eval_every=1", "eval_samples=4"])
    cfg |= {"name": "det", "data": str(store16)}
    loop = Loop(cfg, FaceStore(store16), tmp_path / "run", resume=False)
    rng, weights = torch.get_rng_state(), {k: v.clone() for k, v in loop.nets["unet"].state_dict().items()}
    loop.evaluate(say=lambda line: None)
    loop.evaluate(say=lambda line: None)
    first, second = read_rows(tmp_path / "run")
    assert first["kid"] == second["kid"] and first["kid_std"] == second["kid_std"]
    assert (first["eval_samples"], first["eval_reference"]) == (4, 4)  # 4 of the 12 held-out faces, evenly spaced
    assert torch.equal(torch.get_rng_state(), rng)  # the training RNG is where it was
    assert all(torch.equal(loop.nets["unet"].state_dict()[k], v) for k, v in weights.items())  # raw weights back in place


def test_gan_evaluates_with_its_ema_generator(tmp_path):
    store = blob_store(tmp_path / "s32", 32, train=16, holdout=8, seed=1)
    run = tmp_path / "gan"
    train("dcgan-tiny32", store, run, TINY_GAN + ["eval_every=2", "eval_samples=4", "sample_every=100", "checkpoint_every=100"], steps=2)
    (row,) = [r for r in read_rows(run) if "kid" in r]
    assert row["step"] == 2 and math.isfinite(row["kid"]) and row["eval_reference"] == 4
    assert (run / "eval.png").is_file()


@pytest.mark.parametrize("override, message", [
    ("eval_every=-1", "eval_every is steps between evaluations"),
    ("eval_every=true", "eval_every.*integer"),
    ("eval_every=1.5", "eval_every.*integer"),
    ("eval_samples=1", "eval_samples must be an integer >= 2"),
    ("eval_samples=many", "eval_samples.*integer"),
])
def test_bad_eval_values_are_refused(override, message):
    with pytest.raises(FacegenError, match=message):
        load_config("ddpm-tiny32-v", [override])


def test_eval_without_a_holdout_is_refused_before_training(tmp_path):
    store = blob_store(tmp_path / "no-holdout", 16, train=8, holdout=0)
    run = tmp_path / "run"
    with pytest.raises(FacegenError, match=r"eval_every=2 .* has 0; prepare the store with --holdout N .* or set eval_every=0"):
        train("ddpm-tiny32-v", store, run, TINY + EVAL, steps=2)
    assert not run.exists()  # nothing trained, nothing written
    with pytest.raises(FacegenError, match="eval_every=2"):
        train("ddpm-tiny32-v", store, run, TINY + EVAL, dry_run=True)


def test_kid_from_whole_kernels_equals_kid_from_each_subset(monkeypatch):
    import facegen.metrics.kid as kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 16)), rng.normal(size=(50, 16)) + 0.2
    fast = kid.kernel_distance(a, b, subsets=20, max_subset_size=30)
    monkeypatch.setattr(kid, "FULL_KERNELS_MAX", 0)  # every subset's kernels computed afresh, as before
    slow = kid.kernel_distance(a, b, subsets=20, max_subset_size=30)
    assert fast == pytest.approx(slow, rel=1e-9) and fast[0] > 0
