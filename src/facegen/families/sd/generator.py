"""A fine-tuned Stable Diffusion behind the family-independent `Generator` contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from facegen.families.diffusion.loop import denoise
from facegen.families.diffusion.samplers import SAMPLERS, check_sampler, make_scheduler, names
from facegen.families.sd.networks import SdParts, encode_prompts, vae_scale
from facegen.utils import FacegenError

# SD's latents (scaled to about unit variance) must never be clamped to [-1, 1] or thresholded.
# SD's own scheduler config (PNDM's) has no clip_sample key, and DDIM and DDPM default it to
# true, so both are switched off for every sampler. The base model's timestep spacing is kept.
UNCLAMPED = {"clip_sample": False, "thresholding": False}

DEFAULT_OPTIONS = {"steps": 50, "guidance_scale": 7.5, "sampler": "default", "prompt": None, "negative_prompt": ""}


class SdGenerator:
    """Seed k -> latent x_T from torch.Generator(k) -> CFG denoising -> VAE decode -> face k."""

    family = "sd"

    def __init__(self, parts: SdParts, meta: dict):
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder  # used where they are
        self.tokenizer, self.scheduler_config = parts.tokenizer, parts.scheduler_config
        self.name, self.resolution = meta.get("name", "sd"), int(meta["resolution"])
        self.defaults = {**DEFAULT_OPTIONS, "prompt": meta["prompt"], **meta.get("sample_options", {})}
        cell = vae_scale(self.vae)
        self.latent_shape = (self.unet.config.in_channels, self.resolution // cell, self.resolution // cell)
        self._embeddings: dict[str, torch.Tensor] = {}  # prompt -> (1, L, D), computed once

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _stream(self, seed: int) -> torch.Generator:
        """Seed's random stream positioned after its x_T draw, so x_T and later noise never repeat."""
        g = torch.Generator().manual_seed(int(seed))
        torch.randn(self.latent_shape, generator=g)
        return g

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T (N, 4, H/8, W/8) ~ N(0, I), each from its own torch.Generator seeded by its seed."""
        x = [torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(x).to(self.device)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int] = (), **options: Any) -> torch.Tensor:
        """Faces (N, 3, H, W) in [-1, 1]. Options: steps, guidance_scale, prompt, negative_prompt, sampler."""
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise FacegenError(f"unknown sampling option(s) {', '.join(unknown)} for Stable Diffusion; use {', '.join(DEFAULT_OPTIONS)}")
        o = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        check_sampler(o["sampler"], "ddpm", "Stable Diffusion")
        n = noise.shape[0]
        cond, uncond = (self._embedding(p).expand(n, -1, -1) for p in (o["prompt"], o["negative_prompt"] or ""))
        generators = [self._stream(s) for s in seeds] if SAMPLERS[o["sampler"]].stochastic else None
        scheduler = make_scheduler(o["sampler"], self.scheduler_config, **UNCLAMPED)
        was_training = self.unet.training  # a live generator samples the net being trained
        self.unet.eval()
        try:
            x_0 = denoise(self.unet, scheduler, noise.to(self.device).float(), int(o["steps"]), generators,
                          cond=cond, uncond=uncond, guidance_scale=float(o["guidance_scale"]))
        finally:
            self.unet.train(was_training)
        # One face at a time through the VAE decoder: at 512 px its activations, not the
        # UNet's, are the peak of sampling memory (a batch of 16 can fill a 24 GB card).
        z = (x_0 / self.vae.config.scaling_factor).to(self.vae.dtype)
        images = torch.cat([self.vae.decode(z[i : i + 1]).sample for i in range(len(z))])
        return images.float().clamp(-1, 1)

    def _embedding(self, prompt: str) -> torch.Tensor:
        if prompt not in self._embeddings:
            self._embeddings[prompt] = encode_prompts(self.tokenizer, self.text_encoder, [prompt]).float()
        return self._embeddings[prompt]

    def info(self) -> dict:
        return {"name": self.name, "family": self.family, "resolution": self.resolution, "sampler": self.defaults["sampler"],
                "steps": self.defaults["steps"], "guidance_scale": self.defaults["guidance_scale"],
                "prompt": self.defaults["prompt"], "objective": "ddpm", "samplers": list(names("ddpm")), "device": str(self.device)}
