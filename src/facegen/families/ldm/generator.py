"""Latent diffusion behind the family-independent `Generator` contract.

x_T is drawn per seed in latent space (so morphs between seeds slerp latents), the pixel
family's denoising loop runs on it, and sampler.to_pixels decodes z_0.
"""

from __future__ import annotations

from typing import Sequence

import torch

from facegen.families.ddpm.generator import DiffusionGenerator
from facegen.families.ldm.sampler import to_pixels


class LatentGenerator(DiffusionGenerator):
    """Seeded faces from a latent UNet, its scheduler config and the frozen VAE (see base.Generator).

    x_T has the UNet's shape (c, h/f, w/f): DiffusionGenerator.initial_noise draws it."""

    family = "ldm"

    def __init__(self, unet, scheduler_config, vae, name: str = "ldm", sampler: str = "ddim", steps: int = 50):
        # Never clamp (or threshold) latents, also for models exported before clip_sample was switched off.
        super().__init__(unet, {**scheduler_config, "clip_sample": False, "thresholding": False}, name, sampler, steps)
        self.vae = vae
        self.resolution = int(vae.config.sample_size)  # the image side, what users and pages see

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int], sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
        return to_pixels(self.vae, self.denoise(noise, seeds, sampler, steps, eta))
