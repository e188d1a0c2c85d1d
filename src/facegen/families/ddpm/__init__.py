"""Pixel-space diffusion (DDPM/DDIM): a UNet2DModel denoising 3-channel images directly.

The export is a DDPMPipeline folder (unet/, scheduler/, model_index.json) plus facegen.json,
so `DDPMPipeline.from_pretrained(RUN/model)` works with plain diffusers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from facegen.families.base import Built, Phase
from facegen.families.ddpm.loss import DenoisingLoss
from facegen.families.ddpm.networks import MODEL_DEFAULTS, make_denoiser, make_scheduler
from facegen.families.ddpm.sampler import SCHEDULERS, denoise, make_sampler
from facegen.nets.unet import plain_copy
from facegen.utils import FacegenError, atomic_write_json

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


class DDPMFamily:
    name = "ddpm"
    model_defaults = MODEL_DEFAULTS

    def build(self, cfg: dict, resolution: int) -> Built:
        model = cfg["model"]
        if model["sampler"] not in SCHEDULERS:
            raise FacegenError(f"model.sampler must be one of {', '.join(SCHEDULERS)}, got {model['sampler']!r}")
        unet = make_denoiser(model, resolution)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
        loss = DenoisingLoss(make_scheduler(model), snr_gamma=model["snr_gamma"])
        return Built(nets={"unet": unet}, phases=[Phase("main", ["unet"], optimizer)], loss=loss, ema=["unet"])

    def generator(self, built: Built, cfg: dict) -> DiffusionGenerator:
        """A generator on the live training nets (the loop swaps the EMA weights in first)."""
        model = cfg["model"]
        return DiffusionGenerator(built.nets["unet"], make_scheduler(model).config, cfg.get("name", "ddpm"), model["sampler"], model["sample_steps"])

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        unet = plain_copy(built.nets["unet"])  # weight standardisation baked in: plain diffusers loads it
        DDPMPipeline(unet=unet, scheduler=make_scheduler(cfg["model"])).save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "facegen.json", {
            "family": self.name,
            "name": cfg.get("name", Path(out_dir).parent.name),
            "resolution": int(unet.config.sample_size),
            "sampler": cfg["model"]["sampler"],
            "steps": cfg["model"]["sample_steps"],
            "config": cfg,
        })

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> DiffusionGenerator:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "facegen.json").read_text())
        unet = UNet2DModel.from_pretrained(model_dir / "unet").to(device).eval()
        scheduler = DDPMScheduler.from_pretrained(model_dir / "scheduler")
        return DiffusionGenerator(unet, scheduler.config, meta.get("name", model_dir.name), meta["sampler"], meta["steps"])


FAMILY = DDPMFamily()
