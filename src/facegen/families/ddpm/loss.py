"""The denoising loss of DDPM (Ho et al. 2020, Algorithm 1), epsilon or v target."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn


class DenoisingLoss:
    """|| target - unet(x_t, t) ||^2 per sample, with t ~ U{0..T-1} and x_t from scheduler.add_noise.

    target = epsilon, or v = alpha_t * epsilon - sigma_t * x_0 (Salimans & Ho 2022) for
    prediction_type "v_prediction". With `snr_gamma`, each sample is weighted by
    min(SNR(t), gamma) / SNR(t) (epsilon) or / (SNR(t) + 1) (v): min-SNR-gamma, Hang et al. 2023.
    """

    def __init__(self, scheduler: DDPMScheduler, snr_gamma: float | None = None):
        self.scheduler = scheduler
        self.snr_gamma = snr_gamma
        alphas_cumprod = scheduler.alphas_cumprod
        self.snr = alphas_cumprod / (1 - alphas_cumprod)  # (T,)

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor):
        x_0 = images                                                       # (b, 3, h, w) in [-1, 1]
        epsilon = torch.randn_like(x_0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x_0),), device=x_0.device)
        x_t = self.scheduler.add_noise(x_0, epsilon, t)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x_0, epsilon, t)
        else:
            target = epsilon
        prediction = nets["unet"](x_t, t).sample
        loss = (prediction.float() - target.float()).square().mean(dim=(1, 2, 3))  # (b,)
        if self.snr_gamma is not None:
            snr = self.snr.to(x_0.device)[t]
            weight = snr.clamp(max=self.snr_gamma) / snr
            if self.scheduler.config.prediction_type == "v_prediction":
                weight = snr.clamp(max=self.snr_gamma) / (snr + 1)
            loss = loss * weight
        return loss, {}
