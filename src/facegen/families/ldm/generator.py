"""Latent diffusion behind the family-independent `Generator` contract.

x_T is drawn per seed in latent space (so morphs between seeds slerp latents), the pixel
family's sampling runs on it with latents never clamped, and the frozen autoencoder decodes z_0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from diffusers import AutoencoderKL

from facegen.families.ddpm.generator import TRAILING, DiffusionGenerator


@torch.no_grad()
def to_pixels(vae: AutoencoderKL, z_0: torch.Tensor) -> torch.Tensor:
    """Denoised scaled latents (n, c, h/f, w/f) -> faces (n, 3, h, w) in [-1, 1]: z_0 is
    divided by the latent scale the UNet was trained with (the VAE's scaling_factor)."""
    return vae.decode(z_0 / vae.config.scaling_factor).sample.clamp(-1, 1)


class LatentGenerator(DiffusionGenerator):
    """Seeded faces from a latent UNet, its scheduler config and the frozen VAE (see base.Generator).

    x_T has the UNet's shape (c, h/f, w/f): DiffusionGenerator.initial_noise draws it."""

    family = "ldm"
    # Scaled latents have unit variance: clamping (or thresholding) the predicted z_0 to [-1, 1]
    # would cut about a third of them; also for models exported before clip_sample was switched off.
    scheduler_options: ClassVar[dict] = {**TRAILING, "clip_sample": False, "thresholding": False}

    def __init__(self, unet, scheduler_config, vae, name: str = "ldm", sampler: str = "ddim", steps: int = 50):
        super().__init__(unet, scheduler_config, name, sampler, steps)
        self.vae = vae
        self.resolution = int(vae.config.sample_size)  # the image side, what users and pages see

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int], sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
        return to_pixels(self.vae, self.denoise(noise, seeds, sampler, steps, eta))
