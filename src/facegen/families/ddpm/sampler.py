"""Sampling a pixel-diffusion UNet with diffusers schedulers (the loop of DDPMPipeline.__call__).

Every scheduler is built from the training scheduler's config, so the noise schedule and the
prediction type are the ones the UNet learnt (STYLE G4).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

# Every sampler spaces its steps "trailing": the first step is at t = T-1, from pure noise (Lin et
# al. 2024, "Common diffusion noise schedules and sample steps are flawed"). diffusers' default
# "leading" never visits t = T-1 (10 ancestral steps of 1000 start at t = 900, 25 DDIM steps at
# t = 960: pure noise is treated as partly denoised); measured for DDIM in docs/training.md.
TRAILING = {"timestep_spacing": "trailing"}

SCHEDULERS = {
    "ddpm": (DDPMScheduler, TRAILING),                             # ancestral, Ho et al. 2020
    "ddim": (DDIMScheduler, TRAILING),                             # Song et al. 2021 (eta = 0: deterministic)
    "dpm++": (DPMSolverMultistepScheduler, {**TRAILING, "algorithm_type": "dpmsolver++", "solver_order": 2}),  # DPM-Solver++(2M), Lu et al. 2022
    "unipc": (UniPCMultistepScheduler, TRAILING),                  # Zhao et al. 2023
}


def make_sampler(name: str, train_config) -> object:
    cls, extra = SCHEDULERS[name]
    return cls.from_config(train_config, **extra)


@torch.no_grad()
def denoise(unet, scheduler, x_T: torch.Tensor, generators: list[torch.Generator], steps: int, eta: float = 0.0) -> torch.Tensor:
    """x_T (n, 3, h, w) -> x_0. Stochastic steps draw noise from one generator per sample."""
    scheduler.set_timesteps(steps, device=x_T.device)
    noise_kwargs = {}
    if isinstance(scheduler, DDPMScheduler):
        noise_kwargs = {"generator": generators}
    elif isinstance(scheduler, DDIMScheduler):
        noise_kwargs = {"generator": generators, "eta": eta}
    x = x_T
    for t in scheduler.timesteps:
        model_output = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(model_output, t, x, **noise_kwargs).prev_sample
    return x
