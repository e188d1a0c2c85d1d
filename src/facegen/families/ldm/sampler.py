"""Sampling latent diffusion: the pixel family's denoising loop in latent space, then the VAE decoder.

x_T is drawn per seed in latent space (so morphs between seeds slerp latents); the
denoised latent z_0 is divided by the latent scale and decoded to pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch

from facegen.families.ddpm import STEP_NOISE_SEED_OFFSET, DiffusionGenerator
from facegen.families.ddpm.sampler import SCHEDULERS, denoise, make_sampler
from facegen.utils import FacegenError


class LatentGenerator(DiffusionGenerator):
    """Seeded faces from a latent UNet, its scheduler config and the frozen VAE (see base.Generator)."""

    family = "ldm"

    def __init__(self, unet, scheduler_config, vae, name: str = "ldm", sampler: str = "ddim", steps: int = 50):
        super().__init__(unet, scheduler_config, name, sampler, steps)  # x_T shape: the UNet's (c, h/f, w/f)
        self.vae = vae
        self.resolution = int(vae.config.sample_size)  # the image side, what users and pages see

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        shape = (self.channels, int(self.unet.config.sample_size), int(self.unet.config.sample_size))
        x_T = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(x_T).to(self.device)  # (n, c, h/f, w/f)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int], sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
        sampler = sampler or self.default_sampler
        if sampler not in SCHEDULERS:
            raise FacegenError(f"unknown sampler {sampler!r} for a diffusion model; choose one of {', '.join(SCHEDULERS)}")
        generators = [torch.Generator().manual_seed(int(s) + STEP_NOISE_SEED_OFFSET) for s in seeds]
        was_training = self.unet.training
        self.unet.eval()
        try:
            z_0 = denoise(self.unet, make_sampler(sampler, self.scheduler_config), noise, generators, steps or self.default_steps, eta)
        finally:
            self.unet.train(was_training)
        x_0 = self.vae.decode(z_0 / self.vae.config.scaling_factor).sample  # (n, 3, h, w)
        return x_0.clamp(-1, 1)
