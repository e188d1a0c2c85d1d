"""The latent-diffusion loss: the pixel family's DenoisingLoss applied to scaled latents.

z = scale * sample of the frozen encoder's posterior q(z | x) (Rombach et al. 2022, eq. 2),
drawn from torch's global RNG like the rest of the loss, so resume stays exact. With the
latent cache (facegen.families.latents) the batches are the posterior's moments (mean and
log-variance) instead of faces; the draw consumes the same random numbers either way.
"""

from __future__ import annotations

import torch
from torch import nn

from facegen.families.ddpm.loss import DenoisingLoss


class LatentDiffusionLoss:
    def __init__(self, denoising: DenoisingLoss, vae: nn.Module, inputs: str = "images"):
        self.denoising = denoising  # the pixel loss: epsilon / v target, min-SNR option
        self.vae = vae              # frozen AutoencoderKL; config.scaling_factor = 1/std of latents
        self.inputs = inputs        # "images" in [-1, 1], or "moments": cached posterior (b, 2c, h/f, w/f)

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Faces (b, 3, h, w) in [-1, 1], or their cached moments -> scaled latents (b, c, h/f, w/f) of about unit variance."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        posterior = DiagonalGaussianDistribution(batch.float()) if self.inputs == "moments" else self.vae.encode(batch).latent_dist
        mean, std = posterior.mean, posterior.std
        z = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        return z * self.vae.config.scaling_factor

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor):
        return self.denoising(phase, nets, self.encode(images))
