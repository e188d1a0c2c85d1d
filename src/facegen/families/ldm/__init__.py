"""Latent diffusion (Rombach et al. 2022): the pixel family's UNet, loss and samplers on the
latents of a frozen autoencoder trained by the `ae` family.

`facegen train ldm-tiny64 --data STORE --out RUN --autoencoder RUN_AE` (or the config key
`model.autoencoder`). The export (RUN/model/) is an LDMPipeline folder: unet/, vqvae/ (the
AutoencoderKL, whose `scaling_factor` is the latent scale), scheduler/ (DDIM, built from
the training schedule) and model_index.json, so `LDMPipeline.from_pretrained(RUN/model)`
samples with plain diffusers; facegen.json adds what facegen's sampler needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline, UNet2DModel

from facegen.families.base import Built, Phase, option
from facegen.families.ddpm import DiffusionOptions, scheduler_config
from facegen.families.ddpm.generator import TRAILING
from facegen.families.ddpm.networks import make_objective
from facegen.families.diffusion.loss import DenoisingLoss, Latents
from facegen.families.ldm.generator import LatentGenerator
from facegen.families.ldm.networks import autoencoder_dir, load_autoencoder, make_latent_scheduler, make_latent_unet
from facegen.nets.unet import plain_copy
from facegen.utils import FacegenError, atomic_write_json


@dataclass(frozen=True)
class LatentDiffusionOptions(DiffusionOptions):
    """The pixel family's options (a UNet on latents, the same schedules and samplers) plus
    the autoencoder; UNet defaults of the reference recipe."""

    family: ClassVar[str] = "ldm"
    block_out_channels: list = option([192, 384, 576])  # the reference recipe: 192 channels, x1/x2/x3
    attention_resolutions: list = option([32, 16, 8])   # latent feature-map sizes with self-attention
    sigma_data: float = 1.0                             # objective edm: latents are scaled to unit variance
    autoencoder: str | None = None          # the autoencoder run (or its model/ folder); `facegen train --autoencoder`
    cache_latents: bool = False             # encode the whole store once into RUN_AE/latents/ and train from it


class LatentDiffusionFamily:
    name = "ldm"
    options = LatentDiffusionOptions      # the pixel family's ranges and sampling options
    model_defaults = LatentDiffusionOptions.defaults()

    def build(self, cfg: dict, resolution: int) -> Built:
        o = LatentDiffusionOptions.from_config(cfg)
        o.check({})
        vae = load_autoencoder(o.autoencoder, resolution)
        unet = make_latent_unet(o, vae, resolution)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
        dataset = _cached_latents(vae, o, cfg) if o.cache_latents else None
        loss = DenoisingLoss(make_objective(o, make_latent_scheduler(o)), Latents(vae, "moments" if dataset is not None else "images"))
        return Built(nets={"unet": unet}, phases=[Phase("main", ["unet"], optimizer)], loss=loss, ema=["unet"], frozen={"vae": vae},
                     dataset=dataset)

    def generator(self, built: Built, cfg: dict) -> LatentGenerator:
        """A generator on the live training nets (the loop swaps the EMA weights in first)."""
        o = LatentDiffusionOptions.from_config(cfg)
        return LatentGenerator(built.nets["unet"], make_latent_scheduler(o).config, built.frozen["vae"],
                               cfg.get("name", "ldm"), o.sampler, o.sample_steps)

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        o = LatentDiffusionOptions.from_config(cfg)
        unet = plain_copy(built.nets["unet"])  # weight standardisation baked in: plain diffusers loads it
        # LDMPipeline's default sampler, as facegen samples: trailing steps, latents never clamped (an EDM
        # model's scheduler/ is its EDMEulerScheduler, as in the pixel family)
        scheduler = make_latent_scheduler(o)
        if o.objective == "ddpm":
            scheduler = DDIMScheduler.from_config(scheduler.config, **TRAILING)
        LDMPipeline(vqvae=built.frozen["vae"], unet=unet, scheduler=scheduler).save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "facegen.json", {
            "family": self.name,
            "name": cfg.get("name", Path(out_dir).parent.name),
            "resolution": int(built.frozen["vae"].config.sample_size),
            "latent_scale": float(built.frozen["vae"].config.scaling_factor),
            "objective": o.objective,
            "sampler": o.sampler,
            "steps": o.sample_steps,
            "config": cfg,
        })

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> LatentGenerator:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "facegen.json").read_text())
        unet = UNet2DModel.from_pretrained(model_dir / "unet").to(device).eval()
        vae = AutoencoderKL.from_pretrained(model_dir / "vqvae").to(device).eval()
        return LatentGenerator(unet, scheduler_config(model_dir), vae, meta.get("name", model_dir.name), meta["sampler"], meta["steps"])


def _cached_latents(vae, o: LatentDiffusionOptions, cfg: dict):
    """The store's latents beside the autoencoder (RUN_AE/latents/), keyed by store, VAE weights and flips."""
    from facegen.data.store import FaceStore
    from facegen.families.latents import latent_cache

    if not cfg.get("data"):
        raise FacegenError("model.cache_latents needs the store path in the config (data: STORE); or set model.cache_latents=false")
    folder = autoencoder_dir(o.autoencoder).parent / "latents"
    return latent_cache(FaceStore(cfg["data"]), vae, cfg["hflip"], folder)


FAMILY = LatentDiffusionFamily()
