"""The pixel-diffusion family behind the family-independent `Generator` contract.

A seed k gives x_T from torch.Generator(k); a diffusers scheduler (sampler.py) denoises it
with the UNet; per-step noise of stochastic samplers comes from a second per-seed stream.
"""

from __future__ import annotations

from typing import Sequence

import torch

from facegen.families.ddpm.sampler import SCHEDULERS, denoise, make_sampler
from facegen.utils import FacegenError

# Per-step noise of seed k comes from a generator seeded with k + this offset, so it never
# repeats the stream that drew x_T (seeded with k itself).
STEP_NOISE_SEED_OFFSET = 2**32


class DiffusionGenerator:
    """Seeded faces from a UNet and its training scheduler config (see base.Generator)."""

    family = "ddpm"

    def __init__(self, unet: torch.nn.Module, scheduler_config, name: str = "ddpm", sampler: str = "ddim", steps: int = 50):
        self.unet, self.scheduler_config, self.name = unet, scheduler_config, name
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
        sampler = sampler or self.default_sampler
        if sampler not in SCHEDULERS:
            raise FacegenError(f"unknown sampler {sampler!r} for a diffusion model; choose one of {', '.join(SCHEDULERS)}")
        generators = [torch.Generator().manual_seed(int(s) + STEP_NOISE_SEED_OFFSET) for s in seeds]
        was_training = self.unet.training
        self.unet.eval()
        try:
            return denoise(self.unet, make_sampler(sampler, self.scheduler_config), noise, generators, steps or self.default_steps, eta)
        finally:
            self.unet.train(was_training)

    def info(self) -> dict:
        return {
            "name": self.name, "family": self.family, "resolution": self.resolution,
            "sampler": self.default_sampler, "steps": self.default_steps,
            "samplers": list(SCHEDULERS), "device": str(self.device),
        }
