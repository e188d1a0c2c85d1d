"""The training loop: exact resume, NaN and Ctrl-C handling, atomic checkpoints, rotation, data order."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facegen.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, rotate_checkpoints, save_checkpoint
from facegen.data.store import write_store
from facegen.data.stream import FaceStream, StreamBatches
from facegen.families.base import Diverged
from facegen.families.diffusion.loss import DenoisingLoss
from facegen.train import train

# A 42k-parameter UNet at 16x16: a step takes milliseconds, yet every part of the loop runs.
TINY = [
    "resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
    "batch_size=4", "grad_accum=2", "log_every=1", "tensorboard=false", "sample_seeds=0-1",
    "sample_options={sampler: ddim, steps: 2}", "sample_every=100", "ema.decay=0.9", "warmup_steps=2", "threads=1",
]


@pytest.fixture(scope="module")
def store16(tmp_path_factory):
    """24 synthetic 16x16 'faces' (smooth random blobs): enough to exercise order and flips."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (24, 4, 4, 3)).astype(np.uint8)
    faces = low.repeat(4, axis=1).repeat(4, axis=2)  # (24, 16, 16, 3)
    return write_store(tmp_path_factory.mktemp("store") / "s16", {"train": faces}, {"size": 16, "source": "synthetic"}).path


def net_weights(checkpoint) -> dict:
    return load_file(checkpoint / "nets" / "unet.safetensors")


def test_resume_continues_the_exact_trajectory(store16, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train("ddpm-tiny32-v", store16, whole, TINY + ["checkpoint_every=2"], steps=4)
    train("ddpm-tiny32-v", store16, split, TINY + ["checkpoint_every=2"], steps=2)
    train("ddpm-tiny32-v", store16, split, [], steps=4, resume=True)

    a, b = latest_checkpoint(whole / "checkpoints"), latest_checkpoint(split / "checkpoints")
    assert json.loads((b / "state.json").read_text())["step"] == 4
    for key, value in net_weights(a).items():
        torch.testing.assert_close(net_weights(b)[key], value, rtol=0, atol=1e-6, msg=key)
    ema_a = torch.load(a / "ema" / "unet.pt", weights_only=True)
    ema_b = torch.load(b / "ema" / "unet.pt", weights_only=True)
    assert ema_a["optimization_step"] == ema_b["optimization_step"] == 4
    for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    # The metrics of the resumed run are one line per step, without repeats.
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (split / "model" / "facegen.json").is_file() and (split / "samples" / "strip.png").is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(store16, tmp_path, monkeypatch):
    real_call, calls = DenoisingLoss.__call__, []

    def poisoned(self, phase, nets, images):
        loss, logs = real_call(self, phase, nets, images)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 4 else loss), logs  # 2 micro-batches per step: NaN from step 3

    monkeypatch.setattr(DenoisingLoss, "__call__", poisoned)
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"loss became loss=nan.*last good checkpoint is .*step-000002"):
        train("ddpm-tiny32-v", store16, run, TINY + ["checkpoint_every=2"], steps=6)
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [2]
    assert not (run / "model").exists()
    weights = net_weights(latest_checkpoint(run / "checkpoints"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_ctrl_c_saves_a_checkpoint_then_stops(store16, tmp_path, monkeypatch):
    real_call, calls = DenoisingLoss.__call__, []

    def interrupted(self, phase, nets, images):
        calls.append(1)
        if len(calls) == 3:  # during step 2: the loop finishes it, saves, stops
            os.kill(os.getpid(), signal.SIGINT)
        return real_call(self, phase, nets, images)

    monkeypatch.setattr(DenoisingLoss, "__call__", interrupted)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("ddpm-tiny32-v", store16, run, TINY + ["checkpoint_every=100"], steps=10)
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [2]
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler is given back


def small_state():
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {"net": net}, {"main": optimizer}


def saved(optimizers: dict) -> dict:
    return {name: optimizer.state_dict() for name, optimizer in optimizers.items()}  # what save_checkpoint writes


def test_a_killed_save_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    nets, optimizers = small_state()
    root = tmp_path / "checkpoints"
    save_checkpoint(root, {"step": 5}, nets, {}, saved(optimizers), {}, [{}])
    before = {k: v.clone() for k, v in nets["net"].state_dict().items()}

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)  # dies inside the temporary folder, mid-save
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(root, {"step": 6}, nets, {}, saved(optimizers), {}, [{}])
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["step-000005"]  # no step-000006, no temp folder
    with torch.no_grad():
        nets["net"].weight.zero_()
    state, _ = load_checkpoint(root / "step-000005", nets, {}, optimizers, {})
    assert state["step"] == 5
    torch.testing.assert_close(nets["net"].state_dict()["weight"], before["weight"])


def test_rotation_keeps_the_newest_by_stored_step(tmp_path):
    root = tmp_path / "checkpoints"
    # Folder names disagree with the stored steps on purpose: only state.json counts.
    for name, step in [("a", 30), ("b", 10), ("c", 20), ("d", 40)]:
        (root / name).mkdir(parents=True)
        (root / name / "state.json").write_text(json.dumps({"step": step}))
    (root / ".step-000050.tmp").mkdir()  # an unfinished save is never a checkpoint
    deleted = rotate_checkpoints(root, keep=2)
    assert sorted(p.name for p in deleted) == ["b", "c"]
    assert [step for step, _ in list_checkpoints(root)] == [30, 40]
    assert latest_checkpoint(root).name == "d"


def test_data_order_is_the_same_for_any_process_count_and_resumes():
    stream = FaceStream(10, seed=3, hflip=True)
    one = [item for batch, _ in zip(StreamBatches(stream, 4), range(6)) for item in batch]  # 24 positions: 2.4 epochs
    two = [StreamBatches(FaceStream(10, 3, True), 2, rank=r, world_size=2) for r in range(2)]
    merged = []
    for b0, b1, _ in zip(*two, range(6)):
        merged += b0 + b1
    assert merged == one
    assert sorted(i for i, _ in one[:10]) == list(range(10))  # each epoch is a permutation
    assert any(flip for _, flip in one) and not all(flip for _, flip in one)
    resumed = next(iter(StreamBatches(FaceStream(10, 3, True), 4, start=8)))
    assert resumed == one[8:12]


def test_time_limit_ends_like_a_finished_run_and_resumes(store16, tmp_path, monkeypatch):
    # A clock that advances 1 minute per reading: the limit of 2.5 minutes ends the run after a few steps.
    import time as real_time
    from types import SimpleNamespace

    import facegen.train as train_module

    ticks = iter(range(0, 10_000))
    clock = SimpleNamespace(monotonic=lambda: 60.0 * next(ticks), perf_counter=real_time.perf_counter, time=real_time.time)
    monkeypatch.setattr(train_module, "time", clock)   # only the loop's clock; progress bars keep the real one
    run = tmp_path / "timed"
    train("ddpm-tiny32-v", store16, run, TINY + ["time_limit=2.5", "checkpoint_every=100", "log_every=7"], steps=50)
    state = json.loads((latest_checkpoint(run / "checkpoints") / "state.json").read_text())
    assert 1 <= state["step"] < 50                      # stopped early, by the clock
    assert (run / "model" / "facegen.json").is_file()     # and exported like a finished run
    assert (run / "samples" / f"step-{state['step']:06d}.png").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == state["step"]            # the last step is logged, whatever log_every
    monkeypatch.undo()
    train("ddpm-tiny32-v", store16, run, ["time_limit=null"], steps=state["step"] + 2, resume=True)
    assert json.loads((latest_checkpoint(run / "checkpoints") / "state.json").read_text())["step"] == state["step"] + 2


def test_resume_refuses_a_change_to_the_model_and_records_schedule_changes(store16, tmp_path, capfd):
    from facegen.utils import FacegenError

    run = tmp_path / "run"
    train("ddpm-tiny32-v", store16, run, TINY + ["checkpoint_every=2", "lr=2e-4"], steps=2)
    original = (run / "config.yaml").read_text()
    assert "prediction_type: v_prediction" in original
    for change, key in (("model.prediction_type=epsilon", "model.prediction_type"), ("model.layers_per_block=2", "model.layers_per_block"),
                        ("ema.decay=0.5", "ema.decay"), ("hflip=false", "hflip"), ("seed=3", "seed")):
        with pytest.raises(FacegenError, match=rf"trained with {key}=.*--resume continues that model: {key}=.* is refused; train into another --out"):
            train("ddpm-tiny32-v", store16, run, [change], steps=4, resume=True)
    assert (run / "config.yaml").read_text() == original and not (run / "resumes.jsonl").exists()

    # schedule keys change: recorded with the step they start at; config.yaml keeps the start's values
    capfd.readouterr()
    train("ddpm-tiny32-v", store16, run, ["lr=1e-4"], steps=4, resume=True)
    assert f"resuming from {run / 'checkpoints' / 'step-000002'} (step 2 of 4)" in capfd.readouterr().err   # says where it continues
    train("ddpm-tiny32-v", store16, run, [], steps=6, resume=True)
    assert (run / "config.yaml").read_text() == original
    history = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert [(h["step"], h["checkpoint"]) for h in history] == [(2, "step-000002"), (4, "step-000004")]
    assert history[0]["changed"] == {"steps": [2, 4], "lr": [2e-4, 1e-4]} and history[1]["changed"] == {"steps": [4, 6]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "lr" in line]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1]["lr"] == pytest.approx(2e-4) and rows[-1]["lr"] == pytest.approx(1e-4)  # the change lasts past the next resume

    model = (run / "model" / "facegen.json").stat().st_mtime_ns
    with pytest.raises(FacegenError, match=r"already at step 6 \(checkpoint step-000006\); pass --steps N with N > 6"):
        train("ddpm-tiny32-v", store16, run, [], steps=5, resume=True)
    assert (run / "model" / "facegen.json").stat().st_mtime_ns == model  # nothing trained, nothing exported


def test_grids_and_checkpoints_between_log_steps(store16, tmp_path):
    """Cadences need not be multiples of log_every: a checkpoint at step 3 and a grid at step 5
    with logs every 4 steps (the loop once read the log row at every cadence)."""
    run = tmp_path / "run"
    train("ddpm-tiny32-v", store16, run, [*TINY, "log_every=4", "checkpoint_every=3", "sample_every=5", "keep_checkpoints=5"], steps=6)
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [3, 6]
    assert (run / "samples" / "step-000005.png").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 6] and all(r["img_per_s"] > 0 for r in rows)
