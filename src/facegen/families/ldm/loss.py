"""The latent-diffusion loss: the pixel family's DenoisingLoss applied to scaled latents.

z = scale * sample of the frozen encoder's posterior q(z | x) (Rombach et al. 2022, eq. 2),
drawn from torch's global RNG like the rest of the loss, so resume stays exact. With a
latent cache, the posterior's mean and std come from the cache instead of the encoder; the
draw consumes the same random numbers, so cached and uncached training follow the same path.
"""

from __future__ import annotations

import torch
from torch import nn

from facegen.families.ddpm.loss import DenoisingLoss


class LatentDiffusionLoss:
    def __init__(self, denoising: DenoisingLoss, vae: nn.Module, cache=None):
        self.denoising = denoising  # the pixel loss: epsilon / v target, min-SNR option
        self.vae = vae              # frozen AutoencoderKL; config.scaling_factor = 1/std of latents
        self.cache = cache          # a LatentCache, or None to encode every batch

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) in [-1, 1] -> scaled latents (b, c, h/f, w/f) of about unit variance."""
        moments = self.cache.lookup(images) if self.cache is not None else None
        if moments is None:
            posterior = self.vae.encode(images).latent_dist
            mean, std = posterior.mean, posterior.std
        else:
            mean, std = moments
        z = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        return z * self.vae.config.scaling_factor

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor):
        return self.denoising(phase, nets, self.encode(images))
