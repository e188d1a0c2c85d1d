"""Stable Diffusion family, piece by piece, on a tiny random pipeline built offline (the real
diffusers/transformers classes, loaded back through the same --pretrained path as SD v1.4)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from facegen.config import load_config
from facegen.data.store import write_store
from facegen.families import get_family
from facegen.families.diffusion.loss import DdpmObjective, DenoisingLoss, Latents, Prompts
from facegen.families.latents import CachedLatents, latent_cache
from facegen.families.sd.generator import SdGenerator
from facegen.families.sd.networks import encode_prompts, load_parts
from facegen.families.sd.tiny import byte_level_clip_tokenizer, write_tiny_pipeline
from facegen.utils import FacegenError

PROMPT = "A high-resolution photo of a face"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two cores shared by many test processes: one thread is several times faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd", resolution=32)


@pytest.fixture(scope="module")
def faces32():
    """12 random blocky 32x32 'faces' (8x8-pixel blocks)."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (12, 4, 4, 3)).astype(np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    return faces


def sd_config(tiny_sd, **model) -> dict:
    return load_config({"family": "sd", "lr": 1e-3, "model": {"pretrained": str(tiny_sd), **model}})


@pytest.mark.parametrize("preset", ["sd-finetune", "sd-finetune-celeba", "sd-finetune-aligned", "sd-tiny-cpu"])
def test_presets_resolve(preset):
    cfg = load_config(preset)
    assert cfg["family"] == "sd" and cfg["batch_size"] % cfg["grad_accum"] == 0
    if preset == "sd-finetune-celeba":  # the reference recipe: 5 epochs of CelebA's train split at batch 16
        assert (cfg["lr"], cfg["batch_size"], cfg["grad_clip"], cfg["checkpoint_every"]) == (5e-6, 16, 1.0, 500)
        assert cfg["steps"] == -(-5 * 162_770 // 16) and cfg["model"]["prompt"] == PROMPT
        assert cfg["model"]["pretrained"] == "CompVis/stable-diffusion-v1-4" and cfg["model"]["lora_rank"] == 0


def test_tokenizer_is_built_offline_and_round_trips():
    tok = byte_level_clip_tokenizer(max_length=16)
    ids = tok([PROMPT], padding="max_length", max_length=16, truncation=True).input_ids[0]
    assert len(ids) == 16 and ids[0] == tok.bos_token_id
    assert tok.decode(tok("a face").input_ids, skip_special_tokens=True).replace(" ", "") == "aface"


def test_build_freezes_vae_and_text_encoder_and_trains_only_the_unet(tiny_sd):
    built = get_family("sd").build(sd_config(tiny_sd), 32)
    assert set(built.nets) == {"unet"} and set(built.frozen) == {"vae", "text_encoder"}
    for net in built.frozen.values():
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    optimized = {id(p) for group in built.phases[0].optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in built.nets["unet"].parameters()}
    assert not optimized & {id(p) for net in built.frozen.values() for p in net.parameters()}
    assert built.nets["unet"].is_gradient_checkpointing


def test_lora_trains_only_the_attention_adapters(tiny_sd):
    built = get_family("sd").build(sd_config(tiny_sd, lora_rank=4), 32)
    trained = [n for n, p in built.nets["unet"].named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained} <= {"to_q", "to_k", "to_v", "0"}  # to_out.0


def test_loss_is_per_sample_and_never_calls_the_text_encoder(tiny_sd):
    built = get_family("sd").build(sd_config(tiny_sd), 32)
    calls = []
    built.frozen["text_encoder"].register_forward_hook(lambda *a: calls.append(1))
    loss, logs = built.loss("main", built.nets, torch.rand(3, 3, 32, 32) * 2 - 1)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert calls == []  # the prompt embedding was computed once, at build
    assert all(p.grad is None for net in built.frozen.values() for p in net.parameters())
    assert any(p.grad is not None for p in built.nets["unet"].parameters())


class ContextSpy(torch.nn.Module):
    """A stand-in UNet that records the text embeddings it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, encoder_hidden_states):
        self.seen.append(encoder_hidden_states)
        return type("Out", (), {"sample": x * self.w})()


@pytest.mark.parametrize("dropout, expect_empty", [(0.0, False), (0.999999, True)])
def test_prompt_dropout_swaps_in_the_empty_prompt(tiny_sd, dropout, expect_empty):
    parts = load_parts(str(tiny_sd))
    from diffusers import DDPMScheduler

    prompt, empty = encode_prompts(parts.tokenizer, parts.text_encoder, [PROMPT, ""]).split(1)
    loss = DenoisingLoss(DdpmObjective(DDPMScheduler.from_config(parts.scheduler_config)), Latents(parts.vae), Prompts(prompt, empty, dropout))
    spy = ContextSpy()
    loss("main", {"unet": spy}, torch.zeros(4, 3, 32, 32))
    expected = (empty if expect_empty else prompt).expand(4, -1, -1)
    torch.testing.assert_close(spy.seen[0], expected)
    assert not torch.allclose(prompt, empty)


def test_cached_latents_are_the_vae_moments_of_each_face_and_its_mirror(tiny_sd, faces32, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / "cache"))
    store = write_store(tmp_path / "store", {"train": faces32}, {"size": 32, "source": "synthetic"})
    vae = load_parts(str(tiny_sd)).vae
    cache = latent_cache(store, vae, hflip=True, batch_size=5)
    assert len(cache) == 12 and cache.flips == 2
    again = latent_cache(store, vae, hflip=True)  # a hit: same file, nothing recomputed
    assert again.path == cache.path and len(list((tmp_path / "cache").glob("latents-*.npy"))) == 1
    x = torch.from_numpy(faces32[[7]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        for flip in (False, True):
            moments = vae.encode(x.flip(-1) if flip else x).latent_dist.parameters[0]
            torch.testing.assert_close(cache[(7, flip)], moments, atol=2e-3, rtol=2e-3)  # float16 on disk
    assert isinstance(CachedLatents(cache.path)[(0, False)], torch.Tensor)


def test_sampling_is_per_seed_whatever_the_batch(tiny_sd):
    family = get_family("sd")
    cfg = sd_config(tiny_sd)
    built = family.build(cfg, 32)
    generator: SdGenerator = family.generator(built, cfg)
    for sampler in ("default", "ddpm"):  # deterministic PNDM and stochastic DDPM (per-seed noise streams)
        options = dict(steps=3, guidance_scale=4.0, sampler=sampler)
        batch = generator.decode(generator.initial_noise([3, 4, 5]), [3, 4, 5], **options)
        alone = generator.decode(generator.initial_noise([4]), [4], **options)
        assert batch.shape == (3, 3, 32, 32) and batch.min() >= -1 and batch.max() <= 1
        torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
        assert not torch.allclose(batch[0], batch[1])
    unguided = generator.decode(generator.initial_noise([3]), [3], steps=3, guidance_scale=1.0)
    assert not torch.allclose(unguided[0], batch[0])
    with pytest.raises(FacegenError, match="unknown sampling option"):
        generator.decode(generator.initial_noise([3]), [3], eta=0.5)


def test_missing_or_incomplete_weights_say_where_to_get_them(tmp_path):
    family = get_family("sd")
    with pytest.raises(FacegenError, match=r"no such folder.*huggingface-cli download CompVis/stable-diffusion-v1-4"):
        family.build(load_config({"family": "sd", "model": {"pretrained": str(tmp_path / "nowhere")}}), 512)
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(FacegenError, match=r"not a Stable Diffusion pipeline folder \(no vae, text_encoder, tokenizer, scheduler/\)"):
        family.build(load_config({"family": "sd", "model": {"pretrained": str(tmp_path / "half")}}), 512)


def test_store_resolution_must_fit_the_vae(tiny_sd):
    family = get_family("sd")
    with pytest.raises(FacegenError, match=r"resolution 36 is not a multiple of 8.*--size 32"):
        family.build(sd_config(tiny_sd), 36)
    with pytest.warns(UserWarning, match=r"at 128px, far from its native 32px"):
        family.build(sd_config(tiny_sd), 128)


def test_bad_options_are_refused(tiny_sd):
    with pytest.raises(FacegenError, match="model.optimizer must be auto, adamw or adamw8bit"):
        get_family("sd").build(sd_config(tiny_sd, optimizer="sgd"), 32)
    with pytest.raises(FacegenError, match="model.prompt_dropout"):
        get_family("sd").build(sd_config(tiny_sd, prompt_dropout=1.5), 32)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
def test_8bit_adam_without_bitsandbytes_says_how_to_get_it(tiny_sd):
    with pytest.raises(FacegenError, match="adamw8bit needs bitsandbytes: `pip install bitsandbytes`"):
        get_family("sd").build(sd_config(tiny_sd, optimizer="adamw8bit"), 32)


# ---- issue 26: latents are never clamped, whatever the sampler ---------------------------


@pytest.mark.parametrize("sampler", ["default", "pndm", "ddim", "ddpm", "dpm++", "unipc", "euler-a"])
def test_every_sampler_leaves_latents_unclamped(tiny_sd, sampler):
    """SD's scheduler config (PNDM's) has no clip_sample key, and diffusers' DDIM and DDPM then
    default it to true: they clamped each step's predicted latent z_0 to [-1, 1]."""
    from facegen.families.diffusion.samplers import make_scheduler, names
    from facegen.families.sd.generator import UNCLAMPED
    from facegen.families.sd.networks import load_tokenizer_and_scheduler

    assert sampler in names("ddpm")
    _, scheduler_config = load_tokenizer_and_scheduler(str(tiny_sd))
    scheduler = make_scheduler(sampler, scheduler_config, **UNCLAMPED)
    for key in ("clip_sample", "thresholding"):
        if key in scheduler.config:
            assert scheduler.config[key] is False, key
    if sampler in ("ddim", "ddpm"):
        # One step from x_t whose predicted z_0 is 2.5 (epsilon = 0) lands on about 2.5, not 1.
        scheduler.set_timesteps(1)
        t = scheduler.timesteps[0]
        x_t = torch.full((1, 4, 4, 4), 2.5) * scheduler.alphas_cumprod[t].sqrt()
        z_0 = scheduler.step(torch.zeros_like(x_t), t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
        assert z_0.min() > 2.4
