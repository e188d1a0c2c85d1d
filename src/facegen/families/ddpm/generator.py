"""The pixel-diffusion family behind the family-independent `Generator` contract.

A seed k gives x_T from torch.Generator(k); a sampler of the one registry
(facegen.families.diffusion.samplers) denoises it with the UNet in the one loop; per-step
noise of stochastic samplers comes from a second per-seed stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from facegen.families.diffusion.loop import denoise
from facegen.families.diffusion.samplers import check_sampler, make_scheduler, names, objective_of

# Per-step noise of seed k comes from a generator seeded with k + this offset, so it never
# repeats the stream that drew x_T (seeded with k itself).
STEP_NOISE_SEED_OFFSET = 2**32

# Every sampler spaces its steps "trailing": the first step is at t = T-1, from pure noise (Lin et
# al. 2024, "Common diffusion noise schedules and sample steps are flawed"). diffusers' default
# "leading" never visits t = T-1 (10 ancestral steps of 1000 start at t = 900, 25 DDIM steps at
# t = 960: pure noise is treated as partly denoised); measured for DDIM in docs/training.md.
TRAILING = {"timestep_spacing": "trailing"}


class DiffusionGenerator:
    """Seeded faces from a UNet and its training scheduler config (see base.Generator)."""

    family = "ddpm"
    scheduler_options: ClassVar[dict] = TRAILING  # what this family adds to every sampler (the latent family: no clamping)

    def __init__(self, unet: torch.nn.Module, scheduler_config, name: str = "ddpm", sampler: str = "ddim", steps: int = 50):
        self.unet, self.scheduler_config, self.name = unet, dict(scheduler_config), name
        self.objective = objective_of(self.scheduler_config)
        self.default_sampler, self.default_steps = sampler, steps
        self.resolution = int(unet.config.sample_size)
        self.channels = int(unet.config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        side = int(self.unet.config.sample_size)  # the UNet's side: pixels here, latents in ldm
        x_T = [torch.randn((self.channels, side, side), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(x_T).to(self.device)  # (n, c, h, w)

    def decode(self, noise: torch.Tensor, seeds: Sequence[int], sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
        return self.denoise(noise, seeds, sampler, steps, eta).clamp(-1, 1)

    @torch.no_grad()
    def denoise(self, noise: torch.Tensor, seeds: Sequence[int], sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
        """x_T -> x_0 with the chosen sampler; per-step noise from one generator per seed."""
        sampler = self.default_sampler if sampler in (None, "default") else sampler
        check_sampler(sampler, self.objective)
        generators = [torch.Generator().manual_seed(int(s) + STEP_NOISE_SEED_OFFSET) for s in seeds]
        scheduler = self.scheduler(sampler)
        was_training = self.unet.training
        self.unet.eval()
        try:
            return denoise(self.unet, scheduler, noise, steps or self.default_steps, generators, eta)
        finally:
            self.unet.train(was_training)

    def scheduler(self, sampler: str):
        """A fresh scheduler of the registry's `sampler` on this model's noise, with this family's options."""
        return make_scheduler(sampler, self.scheduler_config, **self.scheduler_options)

    def info(self) -> dict:
        return {
            "name": self.name, "family": self.family, "resolution": self.resolution, "objective": self.objective,
            "sampler": self.default_sampler, "steps": self.default_steps,
            "samplers": list(names(self.objective)), "device": str(self.device),
        }
