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
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline, UNet2DModel

from facegen.families.base import Built, Phase
from facegen.families.ddpm.loss import DenoisingLoss
from facegen.families.ddpm.sampler import SCHEDULERS
from facegen.families.ldm.loss import LatentDiffusionLoss
from facegen.families.ldm.networks import MODEL_DEFAULTS, autoencoder_dir, load_autoencoder, make_latent_scheduler, make_latent_unet
from facegen.families.ldm.sampler import LatentGenerator
from facegen.nets.unet import plain_copy
from facegen.utils import FacegenError, atomic_write_json


class LatentDiffusionFamily:
    name = "ldm"
    model_defaults = MODEL_DEFAULTS

    def build(self, cfg: dict, resolution: int) -> Built:
        model = cfg["model"]
        if model["sampler"] not in SCHEDULERS:
            raise FacegenError(f"model.sampler must be one of {', '.join(SCHEDULERS)}, got {model['sampler']!r}")
        vae = load_autoencoder(model["autoencoder"], resolution)
        unet = make_latent_unet(model, vae, resolution)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
        dataset = _cached_latents(vae, model, cfg) if model["cache_latents"] else None
        loss = LatentDiffusionLoss(DenoisingLoss(make_latent_scheduler(model), snr_gamma=model["snr_gamma"]), vae,
                                   inputs="moments" if dataset is not None else "images")
        return Built(nets={"unet": unet}, phases=[Phase("main", ["unet"], optimizer)], loss=loss, ema=["unet"], frozen={"vae": vae},
                     dataset=dataset)

    def generator(self, built: Built, cfg: dict) -> LatentGenerator:
        """A generator on the live training nets (the loop swaps the EMA weights in first)."""
        model = cfg["model"]
        return LatentGenerator(built.nets["unet"], make_latent_scheduler(model).config, built.frozen["vae"],
                               cfg.get("name", "ldm"), model["sampler"], model["sample_steps"])

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        unet = plain_copy(built.nets["unet"])  # weight standardisation baked in: plain diffusers loads it
        # LDMPipeline's default sampler, as facegen samples: trailing steps, latents never clamped
        scheduler = DDIMScheduler.from_config(make_latent_scheduler(cfg["model"]).config, **SCHEDULERS["ddim"][1])
        LDMPipeline(vqvae=built.frozen["vae"], unet=unet, scheduler=scheduler).save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "facegen.json", {
            "family": self.name,
            "name": cfg.get("name", Path(out_dir).parent.name),
            "resolution": int(built.frozen["vae"].config.sample_size),
            "latent_scale": float(built.frozen["vae"].config.scaling_factor),
            "sampler": cfg["model"]["sampler"],
            "steps": cfg["model"]["sample_steps"],
            "config": cfg,
        })

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> LatentGenerator:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "facegen.json").read_text())
        unet = UNet2DModel.from_pretrained(model_dir / "unet").to(device).eval()
        vae = AutoencoderKL.from_pretrained(model_dir / "vqvae").to(device).eval()
        scheduler = DDIMScheduler.from_pretrained(model_dir / "scheduler")
        return LatentGenerator(unet, scheduler.config, vae, meta.get("name", model_dir.name), meta["sampler"], meta["steps"])


def _cached_latents(vae, model: dict, cfg: dict):
    """The store's latents beside the autoencoder (RUN_AE/latents/), keyed by store, VAE weights and flips."""
    from facegen.data.store import FaceStore
    from facegen.families.latents import latent_cache

    if not cfg.get("data"):
        raise FacegenError("model.cache_latents needs the store path in the config (data: STORE); or set model.cache_latents=false")
    folder = autoencoder_dir(model["autoencoder"]).parent / "latents"
    return latent_cache(FaceStore(cfg["data"]), vae, cfg["hflip"], folder)


FAMILY = LatentDiffusionFamily()
