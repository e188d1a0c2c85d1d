"""Sampling latent diffusion: the pixel family's samplers (facegen.families.ddpm.sampler) on
scaled latents, never clamped (clip_sample off, see networks.make_latent_scheduler), then
the frozen autoencoder's decoder."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def to_pixels(vae: AutoencoderKL, z_0: torch.Tensor) -> torch.Tensor:
    """Denoised scaled latents (n, c, h/f, w/f) -> faces (n, 3, h, w) in [-1, 1]: z_0 is
    divided by the latent scale the UNet was trained with (the VAE's scaling_factor)."""
    return vae.decode(z_0 / vae.config.scaling_factor).sample.clamp(-1, 1)
