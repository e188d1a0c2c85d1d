"""Two CPU processes (gloo) under `accelerate launch` against one process: training follows the
same loss trajectory (DDP; FSDP for Stable Diffusion), sampling writes bitwise the same images,
evaluation the same features.

Each launch starts two fresh Pythons (torch, diffusers: ~10-20 s on a busy 2-core machine), so
the nets are tiny and the runs a few steps long. The one-process runs are in this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch
from safetensors.torch import load_file

from facegen.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACCELERATE = Path(sys.executable).parent / "accelerate"
FACEGEN = Path(sys.executable).parent / "facegen"
FSDP = Path(__file__).parents[1] / "docs" / "accelerate" / "fsdp-cpu-2proc.yaml"
STEPS, BATCH = 8, 16
COMMON = [f"batch_size={BATCH}", "log_every=1", "tensorboard=false", "sample_seeds=0-1", "sample_every=100",
          "checkpoint_every=4", "threads=1", "ema.decay=0.9"]
# Everything the tolerances below depend on is pinned here, so a change to a preset cannot move them.
DDPM = ["model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[]",
        "model.prediction_type=epsilon", "model.beta_schedule=linear", "model.num_train_timesteps=1000",
        "sample_options={sampler: ddim, steps: 2}", "lr=1e-3", "warmup_steps=0", "grad_clip=1.0", *COMMON]
# Layer norm, not batch norm: batch-norm statistics are per process (each sees batch/2 images),
# so a batch-norm GAN legitimately differs between 1 and 2 processes.
GAN = ["model.z_dim=16", "model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8",
       "model.g_norm=layer", "model.d_norm=layer", "model.objective=nonsaturating", "lr=2e-4", "adam_betas=[0.5,0.999]",
       "grad_clip=null", "warmup_steps=0", *COMMON, "batch_size=32"]
# Full fine-tuning of the tiny random SD pipeline, with an EMA: checkpoints, EMA and export all
# have to gather the FSDP shards.
SD = ["model.ema=true", "model.lora_rank=0", "model.prompt_dropout=0.2", "model.gradient_checkpointing=true",
      "model.optimizer=adamw", "lr=1e-3", "warmup_steps=0", "grad_clip=1.0", "keep_checkpoints=2",
      "sample_options={steps: 2, guidance_scale: 3.0}", *COMMON]

# The processes draw their own diffusion noise / GAN latents (seed + rank), so the losses agree
# in distribution, not bit for bit. Each logged loss (the global batch's mean) and the mean of
# the trajectory must agree within (per step, mean), relative. Measured on this machine:
# DDPM (batch 16) 1.2% per step at most, 0.1% on the mean; GAN (batch 32; the generator loss
# has the larger spread) 17% per step at most, 3.2% on the mean. A DDPM run whose gradients
# were summed, not averaged (as with twice the lr), is off by 14% at step 8, 9% on the mean
# (measured with lr=2e-3 on one process). SD (batch 16; random timesteps over 1000 make the
# per-step loss noisy): 13% per step at most, 3.0% on the mean; a run that learns 10x slower
# (lr=1e-4) is off by 22% on the mean. (The same run under DDP on 2 processes gave the FSDP
# losses to 2e-7: the two differ only in float rounding.)
TOLERANCE = {"ddpm": (0.05, 0.02), "gan": (0.30, 0.10), "sd": (0.25, 0.08)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2, env: dict | None = None, script: bool | Path = False, config: Path | None = None) -> str:
    """`accelerate launch --multi_gpu --num_processes N -m facegen.cli ARGS` on the CPU (gloo);
    script=True: `accelerate launch ... $(which facegen) ARGS`, the console script; script=PATH:
    that Python file; config: `accelerate launch --config_file CONFIG -m facegen.cli ARGS` instead of the flags."""
    flags = (["--config_file", str(config)] if config else
             ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"])
    program = [str(script)] if isinstance(script, Path) else [str(FACEGEN)] if script else ["-m", "facegen.cli"]
    command = [str(ACCELERATE), "launch", *flags, "--main_process_port", str(free_port()), *program, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    errors = [line for line in result.stderr.splitlines() if "rror" in line or "terminate" in line or "what()" in line]
    assert result.returncode == 0, f"launch failed ({result.returncode}):\n" + "\n".join(errors[:20]) + f"\n{result.stderr[-2000:]}"
    return result.stdout


def losses(run: Path) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {key: [row[key] for row in rows] for key in rows[0] if key.startswith("loss")} | {"step": [row["step"] for row in rows]}


def state(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step-{step:06d}" / "state.json").read_text())


def assert_same_trajectory(one: dict, two: dict, family: str) -> None:
    step_tolerance, mean_tolerance = TOLERANCE[family]
    assert one["step"] == two["step"] == list(range(1, STEPS + 1))  # one line per step: only the main process logs
    for key in (k for k in one if k.startswith("loss")):
        a, b = np.array(one[key]), np.array(two[key])
        trajectories = f"{key}: 1 process {a.round(4)}, 2 processes {b.round(4)}"
        print(trajectories)
        assert (np.abs(b - a) / np.abs(a)).max() < step_tolerance, trajectories
        assert abs(b.mean() - a.mean()) / abs(a.mean()) < mean_tolerance, trajectories


@pytest.fixture(scope="module")
def ddpm_runs(celeba_store32, tmp_path_factory):
    """The same tiny DDPM training, in one process and in two."""
    root = tmp_path_factory.mktemp("ddpm")
    train("ddpm-tiny32-v", celeba_store32.path, root / "one", DDPM, steps=STEPS)
    launch("train", "ddpm-tiny32-v", "--data", str(celeba_store32.path), "--out", str(root / "two"), "--steps", str(STEPS), *DDPM)
    return root / "one", root / "two"


def test_ddpm_on_two_processes_follows_the_one_process_trajectory(ddpm_runs):
    one, two = ddpm_runs
    assert_same_trajectory(losses(one), losses(two), "ddpm")
    # Both consumed the same stream positions: the global batch is the same images.
    assert state(two, STEPS)["data_position"] == state(one, STEPS)["data_position"] == STEPS * BATCH
    assert state(two, STEPS)["world_size"] == 2
    rngs = sorted(p.name for p in (two / "checkpoints" / f"step-{STEPS:06d}" / "rng").iterdir())
    assert rngs == ["process0.pt", "process1.pt"]  # each process's noise stream is saved for an exact resume
    assert (two / "model" / "facegen.json").is_file() and (two / "samples" / "strip.png").is_file()
    assert not list(two.glob(".*.tmp"))  # no half-written artefact from a second writer


def test_a_two_process_run_resumes_on_one_process(ddpm_runs, celeba_store32, tmp_path):
    """World size 2 -> 1: weights, optimizer and data position carry over; noise is re-derived."""
    import shutil

    one, two = ddpm_runs
    run = tmp_path / "resumed"
    shutil.copytree(two, run)
    shutil.rmtree(run / "checkpoints" / f"step-{STEPS:06d}")  # continue from step 4, written by two processes
    (run / "model").rename(tmp_path / "old-model")
    train("ddpm-tiny32-v", celeba_store32.path, run, [], steps=STEPS, resume=True)
    assert state(run, STEPS)["world_size"] == 1
    assert state(run, STEPS)["data_position"] == STEPS * BATCH  # the same images, in the same order
    resumed = losses(run)
    assert resumed["step"] == list(range(1, STEPS + 1))
    assert resumed["loss"][:4] == losses(two)["loss"][:4]
    # steps 5-8 on one process continue the trajectory of the one-process run
    step_tolerance, _ = TOLERANCE["ddpm"]
    a, b = np.array(losses(one)["loss"][4:]), np.array(resumed["loss"][4:])
    assert (np.abs(b - a) / a).max() < step_tolerance, f"1 process {a.round(4)}, resumed {b.round(4)}"
    assert (run / "model" / "facegen.json").is_file()


def test_gan_on_two_processes_follows_the_one_process_trajectory(celeba_store32, tmp_path):
    train("dcgan-tiny32", celeba_store32.path, tmp_path / "one", GAN, steps=STEPS)
    launch("train", "dcgan-tiny32", "--data", str(celeba_store32.path), "--out", str(tmp_path / "two"), "--steps", str(STEPS), *GAN)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert {"loss_D", "loss_G"} <= set(one)
    assert_same_trajectory(one, two, "gan")


def test_eval_every_on_two_processes_writes_one_row_per_evaluation(celeba_store32, tmp_path):
    # The reference features are a collective (every process extracts its share); sampling and
    # scoring are the main process's alone while the other waits: no deadlock, one row each time.
    run = tmp_path / "two"
    launch("train", "ddpm-tiny32-v", "--data", str(celeba_store32.path), "--out", str(run), "--steps", "4", *DDPM,
           "eval_every=2", "eval_samples=4", env={"FACEGEN_CACHE": str(tmp_path / "cache")})
    evals = [row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "kid" in row]
    assert [row["step"] for row in evals] == [2, 4] and all(np.isfinite(row["kid"]) for row in evals)
    assert (run / "eval.png").is_file()


def test_sd_under_fsdp_follows_one_process_resumes_exactly_and_exports_the_full_ema(celeba_store32, tmp_path):
    """FSDP (fsdp-cpu-2proc.yaml) on the tiny SD: each process holds a shard of every UNet weight,
    Adam moment and EMA weight. Checkpoints gather them and a resume cuts them out again: a run
    resumed at step 4 is bitwise the run that never stopped. model/ holds the full EMA weights."""
    from diffusers import UNet2DConditionModel

    from facegen.families.sd.tiny import write_tiny_pipeline
    from facegen.sample import generate, load_generator

    args = [f"model.pretrained={write_tiny_pipeline(tmp_path / 'tiny-sd')}", *SD]
    data = ["--data", str(celeba_store32.path)]
    train("sd-tiny-cpu", celeba_store32.path, tmp_path / "one", args, steps=STEPS)
    fsdp = tmp_path / "fsdp"
    launch("train", "sd-tiny-cpu", *data, "--out", str(fsdp), "--steps", str(STEPS), *args, config=FSDP)
    assert state(fsdp, STEPS)["fsdp"] and state(fsdp, STEPS)["world_size"] == 2  # sharded indeed, not DDP
    assert_same_trajectory(losses(tmp_path / "one"), losses(fsdp), "sd")
    assert (fsdp / "samples" / "strip.png").is_file()  # the grid, from weights gathered mid-run

    resumed = tmp_path / "resumed"
    shutil.copytree(fsdp, resumed)
    shutil.rmtree(resumed / "checkpoints" / f"step-{STEPS:06d}")
    shutil.rmtree(resumed / "model")
    launch("train", "sd-tiny-cpu", *data, "--out", str(resumed), "--resume", config=FSDP)
    assert losses(resumed) == losses(fsdp)
    for part in ("nets/unet.safetensors", "ema/unet.pt", "optimizers/main.pt", "model/unet/diffusion_pytorch_model.safetensors"):
        a, b = (tensors(run, part) for run in (fsdp, resumed))
        assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b)), part

    # model/ is the EMA at the last step, every weight in full (as the checkpoint gathered it), and it samples.
    exported = UNet2DConditionModel.from_pretrained(fsdp / "model", subfolder="unet")
    ema = tensors(fsdp, "ema/unet.pt")
    assert [p.shape for p in exported.parameters()] == [p.shape for p in ema]
    assert all(torch.equal(p, q) for p, q in zip(exported.parameters(), ema))
    raw = load_file(fsdp / "checkpoints" / f"step-{STEPS:06d}" / "nets" / "unet.safetensors")
    assert any(not torch.equal(p, raw[name]) for name, p in exported.named_parameters())  # the EMA, not the raw weights
    images = generate(load_generator(fsdp), [0, 1], batch_size=2, steps=2)
    assert images.shape == (2, 32, 32, 3) and images.std() > 0

    # The checkpoint is the same files as without FSDP: one process continues it.
    single = tmp_path / "single"
    shutil.copytree(resumed, single)
    shutil.rmtree(single / "checkpoints" / f"step-{STEPS:06d}")
    train("sd-tiny-cpu", celeba_store32.path, single, [], steps=STEPS, resume=True)
    assert not state(single, STEPS)["fsdp"] and losses(single)["loss"][:4] == losses(fsdp)["loss"][:4]
    assert torch.load(single / "checkpoints" / f"step-{STEPS:06d}" / "optimizers" / "main.pt")["state"][0]["step"] == STEPS


def tensors(run: Path, part: str) -> list:
    """The tensors of a checkpoint part (step STEPS) or a model/ file, in order."""
    path = run / part if part.startswith("model/") else run / "checkpoints" / f"step-{STEPS:06d}" / part
    if path.suffix == ".safetensors":
        return list(load_file(path).values())
    saved = torch.load(path, weights_only=True)
    if "shadow_params" in saved:  # EMA
        return saved["shadow_params"]
    return [t for moments in saved["state"].values() for t in moments.values()]  # optimizer


def test_sampling_on_two_processes_writes_the_same_images(ddpm_runs, tmp_path):
    from facegen.sample import sample_to_folder

    _, two = ddpm_runs
    # batches of 2 seeds: process 0 takes seeds 0-1 and 4-5, process 1 seeds 2-3 and 6
    sample_to_folder(two, range(7), tmp_path / "one", batch_size=2, show_progress=False, sampler="ddim", steps=3)
    printed = launch("sample", str(two), "--n", "7", "--out", str(tmp_path / "two"), "--batch", "2", "--sampler", "ddim", "--steps", "3",
                     script=True)
    assert printed.count("7 written") == 1  # counts gathered, printed once
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(names) == 7
    # The same faces; batches of another size may move a pixel by one grey level (documented in
    # docs/training.md, "Sampling"), which is all this allows.
    for name in names:
        one, two = (np.asarray(Image.open(tmp_path / run / name), dtype=int) for run in ("one", "two"))
        assert np.abs(one - two).max() <= 1 and np.mean(one != two) < 0.01, name


GROUP_AT_EXIT = """
import os, sys

from facegen import distributed


def threads():
    return len(os.listdir("/proc/self/task"))


before = threads()
if sys.argv[1] == "accelerator":
    distributed.accelerator()
rank, _ = distributed.rank_world()
import diffusers  # imports torch.distributed.fsdp now that the group exists

distributed.gather_objects(rank)  # a collective: the gloo worker threads are running
distributed.close_process_group()  # what runs at exit
print(f"threads before the group {before}, after closing it {threads()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
@pytest.mark.parametrize("start", ["state", "accelerator"])
def test_the_process_group_is_freed_before_the_interpreter_exits(start, tmp_path):
    """A group that outlives closing (held by torch.distributed.fsdp, imported after the group
    existed) kept its gloo worker threads into interpreter finalisation, where one of them
    aborted the process at random ("terminate called without an active exception"; one launch
    in four here). Freed, its threads are joined: the count is back to what it was."""
    script = tmp_path / "group_at_exit.py"
    script.write_text(GROUP_AT_EXIT)
    printed = launch(start, script=script)
    counts = re.findall(r"threads before the group (\d+), after closing it (\d+)", printed)
    assert len(counts) == 2 and all(before == after for before, after in counts), printed


def test_eval_on_two_processes_gathers_the_same_features(celeba_store32, tiny_gan_model, tmp_path, monkeypatch):
    """Generated and reference Inception features split over two processes: the same KID and
    the same cached reference features as one process (up to float summation order)."""
    from facegen.data.store import write_store
    from facegen.evaluate import evaluate
    from facegen.sample import sample_to_folder

    # 24 generated, 16 reference pictures in Inception batches of 8: 3 and 2 batches to split
    real = np.asarray(celeba_store32.split("holdout")[:32])
    ref = write_store(tmp_path / "ref", {"train": real[:16], "holdout": real[16:]}, {"size": 32, "source": "celeba"}).path
    faces = tmp_path / "faces"
    sample_to_folder(tiny_gan_model, range(24), faces, show_progress=False)
    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache-one"))
    one = evaluate(faces, ref, metrics="kid", out=tmp_path / "one", batch_size=8, progress=False, command="test")
    launch("eval", str(faces), "--ref", str(ref), "--metrics", "kid", "--out", str(tmp_path / "two"), "--batch", "8",
           env={"FACEGEN_CACHE": str(tmp_path / "cache-two")})
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert two["kid"]["n_generated"] == 24 and two["kid"]["n_reference"] == 16
    assert two["kid"]["value"] == pytest.approx(one["metrics"]["kid"]["value"], rel=1e-3, abs=1e-6)
    # The reference's and the samples' features, cached under the same keys by one and two processes.
    one_files, two_files = (sorted((tmp_path / c).glob("inception-*.npy")) for c in ("cache-one", "cache-two"))
    assert len(one_files) == 2 and [f.name for f in one_files] == [f.name for f in two_files]
    for file_one, file_two in zip(one_files, two_files):
        np.testing.assert_allclose(np.load(file_two), np.load(file_one), rtol=1e-4, atol=1e-4)


def test_work_is_split_in_whole_batches_in_order(monkeypatch):
    """Each process's share, as if it were process r of W (no process group needed)."""
    import facegen.distributed as distributed

    def shares(world, share):
        out = []
        for rank in range(world):
            monkeypatch.setattr(distributed, "rank_world", lambda rank=rank: (rank, world))
            out.append(share())
        return out

    # features: contiguous blocks of whole batches, in rank order (gathering keeps the order)
    assert shares(2, lambda: distributed.block(7, 2)) == [range(0, 4), range(4, 7)]
    assert shares(3, lambda: distributed.block(100, 8)) == [range(0, 32), range(32, 64), range(64, 100)]
    assert shares(2, lambda: distributed.block(5, 8)) == [range(0, 0), range(0, 5)]
    for n, unit, world in [(64, 32, 2), (1000, 7, 8), (3, 1, 4)]:
        assert [i for r in shares(world, lambda: distributed.block(n, unit)) for i in r] == list(range(n))
