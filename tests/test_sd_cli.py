"""Stable Diffusion end to end through the commands a GPU user runs, offline: a tiny random
pipeline folder stands in for CompVis/stable-diffusion-v1-4 behind --pretrained.

train (full and LoRA, checkpoints, resume) -> sample (guidance, prompts, per-seed, resumable)
-> sweep (KID per guidance scale). Real CelebA faces at 32x32, a handful of steps.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from facegen.cli import main
from facegen.data.store import FaceStore, write_store
from facegen.families.sd.networks import load_frozen
from facegen.families.sd.tiny import write_tiny_pipeline
from facegen.train import Loop, train

PROMPT = "A high-resolution photo of a face"
# The tiny-preset run, one thread (two cores shared by many test processes).
OVERRIDES = ["threads=1", "checkpoint_every=2", "sample_every=4", "model.prompt_dropout=0.25"]


def facegen(*args) -> SimpleNamespace:
    """Run the `facegen` command in this process: (exit status, stdout, stderr)."""
    argv, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = ["facegen", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def env(tmp_path_factory, celeba_dir):
    """Tiny SD folder, a 24 + 4 CelebA store at 32x32, a private cache folder, one thread."""
    from facegen.data.transforms import crop_celeba
    from facegen.metrics.images import ImageFolder

    root = tmp_path_factory.mktemp("sd-e2e")
    celeba = ImageFolder(celeba_dir, limit=28)
    faces = np.stack([crop_celeba(celeba[i], 32) for i in range(28)])
    store = write_store(root / "store", {"train": faces[:24], "holdout": faces[24:]}, {"source": "celeba-10k", "size": 32})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEGEN_CACHE", str(root / "cache"))
        yield SimpleNamespace(root=root, store=store.path, tiny=write_tiny_pipeline(root / "tiny-sd"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_run(env):
    """4 steps of full UNet fine-tuning through the loop, keeping the live objects to inspect."""
    out = env.root / "full"
    cfg = train("sd-tiny-cpu", env.store, out, [*OVERRIDES, f"model.pretrained={env.tiny}"], dry_run=True)
    loop = Loop(cfg, FaceStore(env.store), out, resume=False)
    loop.fit()
    return SimpleNamespace(out=out, built=loop.built, cfg=cfg)


def unet_checkpoint(run, step: int) -> dict:
    return load_file(run / "checkpoints" / f"step-{step:06d}" / "nets" / "unet.safetensors")


def test_full_finetuning_trains_the_unet_and_leaves_vae_and_text_encoder_untouched(env, full_run):
    vae, text_encoder = load_frozen(str(env.tiny))  # the weights on disk, as downloaded
    for name, before in (("vae", vae), ("text_encoder", text_encoder)):
        after = full_run.built.frozen[name]
        for key, value in before.state_dict().items():
            torch.testing.assert_close(after.state_dict()[key], value, rtol=0, atol=0, msg=f"{name}.{key}")
        assert all(p.grad is None and not p.requires_grad for p in after.parameters()), name
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(env.tiny, subfolder="unet").state_dict()
    trained = unet_checkpoint(full_run.out, 4)
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    # The export is a StableDiffusionPipeline folder that plain diffusers loads, with the trained UNet.
    pipe = StableDiffusionPipeline.from_pretrained(full_run.out / "model", safety_checker=None)
    for key, value in pipe.unet.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    meta = json.loads((full_run.out / "model" / "facegen.json").read_text())
    assert meta["family"] == "sd" and meta["prompt"] == PROMPT and meta["resolution"] == 32 and not meta["lora"]
    assert (full_run.out / "samples").is_dir() and sorted(p.name for p in (full_run.out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_resume_from_a_checkpoint_continues_the_same_trajectory(env, full_run):
    split = env.root / "split"
    common = ["sd-tiny-cpu", "--data", env.store, "--out", split, "--pretrained", env.tiny, *OVERRIDES]
    assert facegen("train", *common, "--steps", "2").returncode == 0
    result = facegen("train", *common, "--resume", "--steps", "4")
    assert result.returncode == 0, result.stderr
    whole, resumed = unet_checkpoint(full_run.out, 4), unet_checkpoint(split, 4)
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_lora_with_cached_latents_exports_weights_that_diffusers_loads(env):
    from diffusers import StableDiffusionPipeline

    from facegen.sample import load_generator

    out = env.root / "lora"
    result = facegen("train", "sd-tiny-cpu", "--data", env.store, "--out", out, "--pretrained", env.tiny, "--prompt", "a face: frontal",
                     *OVERRIDES, "model.lora_rank=4", "model.cache_latents=true", "lr=1e-2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == ["facegen.json", "pytorch_lora_weights.safetensors"]
    assert len(list((env.root / "cache").glob("latents-*.npy"))) == 1
    meta = json.loads((out / "model" / "facegen.json").read_text())
    assert meta["lora"] and meta["base"] == str(env.tiny) and meta["prompt"] == "a face: frontal"

    # A diffusers user: base pipeline + load_lora_weights gives the UNet our generator samples with.
    pipe = StableDiffusionPipeline.from_pretrained(env.tiny, safety_checker=None)
    x, t, context = torch.randn(1, 4, 4, 4), torch.tensor([500]), torch.randn(1, 16, 32)
    with torch.no_grad():
        base = pipe.unet(x, t, encoder_hidden_states=context).sample
        pipe.load_lora_weights(out / "model")
        tuned = pipe.unet(x, t, encoder_hidden_states=context).sample
        ours = load_generator(out, device="cpu").unet(x, t, encoder_hidden_states=context).sample
    assert not torch.allclose(base, tuned, atol=1e-4)
    torch.testing.assert_close(ours, tuned, atol=1e-4, rtol=1e-4)


def test_sample_with_guidance_and_prompts_is_per_seed_and_resumable(full_run, tmp_path):
    options = ["--steps", "3", "--guidance-scale", "3", "--negative-prompt", "tilted, cropped"]
    one = facegen("sample", full_run.out, "--seeds", "0-3", "--out", tmp_path / "a", "--batch", "4", *options)
    assert one.returncode == 0 and "4 written" in one.stdout, one.stderr
    two = facegen("sample", full_run.out, "--seeds", "2-5", "--out", tmp_path / "b", "--batch", "1", *options)
    assert two.returncode == 0 and "4 written" in two.stdout
    again = facegen("sample", full_run.out, "--n", "6", "--out", tmp_path / "b", "--batch", "1", *options)
    assert "2 written, 4 already there" in again.stdout

    def load(folder, seed):
        return np.asarray(Image.open(folder / f"seed{seed:06d}.png"), dtype=np.int16)

    for seed in (2, 3):  # same face whatever the batch it was made in
        assert np.abs(load(tmp_path / "a", seed) - load(tmp_path / "b", seed)).max() <= 1
    other = facegen("sample", full_run.out, "--seeds", "2", "--out", tmp_path / "c", "--steps", "3", "--guidance-scale", "8")
    assert other.returncode == 0 and np.abs(load(tmp_path / "c", 2) - load(tmp_path / "a", 2)).max() > 1


def test_sweep_tabulates_kid_per_guidance_scale(env, full_run):
    out = env.root / "sweep"
    result = facegen("sweep", full_run.out, "--ref", env.store, "--scales", "1,6", "--n", "2", "--metrics", "kid", "--steps", "2",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "sweep.json").read_text())
    assert [row["guidance_scale"] for row in table["rows"]] == [1.0, 6.0]
    for row in table["rows"]:
        kid = row["metrics"]["kid"]
        assert np.isfinite(kid["value"]) and kid["n_generated"] == 2 and kid["n_reference"] == 4
    assert len(list((out / "guidance-1" / "samples").glob("seed*.png"))) == 2
    assert table["rows"][0]["metrics"]["kid"]["value"] != table["rows"][1]["metrics"]["kid"]["value"]
    assert "| 6 |" in (out / "sweep.md").read_text() and "| guidance | KID x1e3 |" in result.stdout
    assert facegen("sweep", full_run.out, "--ref", env.store, "--scales", "1,x").returncode == 2


def test_missing_weights_and_out_of_memory_are_one_line_errors(env, monkeypatch):
    missing = facegen("train", "sd-tiny-cpu", "--data", env.store, "--out", env.root / "x", "--pretrained", env.root / "no-sd")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "huggingface-cli download CompVis/stable-diffusion-v1-4" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    from facegen.families.diffusion.loss import DenoisingLoss

    def out_of_memory(self, phase, nets, images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DenoisingLoss, "__call__", out_of_memory)
    oom = facegen("train", "sd-tiny-cpu", "--data", env.store, "--out", env.root / "oom", "--pretrained", env.tiny, "threads=1",
                  "model.gradient_checkpointing=false")
    last = oom.stderr.strip().splitlines()[-1]  # after the weight-loading progress bars
    assert oom.returncode == 2 and last.startswith("error: GPU out of memory") and "Traceback" not in oom.stderr
    for advice in ("grad_accum=2", "model.gradient_checkpointing=true", "model.lora_rank=16"):
        assert advice in last, last
